use deal_runtime::model::LogitsFor;
use deal_runtime::{Engine, EngineOptions};
fn main() {
    let e = Engine::load(deal_runtime::setup::default_model_path(), &EngineOptions::default()).unwrap();
    let full = e.encode_prompt("The old lighthouse keeper climbed the stairs and looked out at the").unwrap();
    let d = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let n = full.len();
    let mut c = e.model().new_cache(1).unwrap();
    let all = e.model().forward(&mut c, &[full.clone()], LogitsFor::All).unwrap().logits.unwrap().get(0).unwrap();
    for split in [1usize, 2, 5, n - 1] {
        let mut c = e.model().new_cache(1).unwrap();
        e.model().forward(&mut c, &[full[..split].to_vec()], LogitsFor::None).unwrap();
        let o = e.model().forward(&mut c, &[full[split..].to_vec()], LogitsFor::All).unwrap().logits.unwrap().get(0).unwrap();
        let diffs: Vec<String> = (0..n - split).map(|i| format!("{:.3}", d(&o.get(i).unwrap().to_vec1::<f32>().unwrap(), &all.get(split + i).unwrap().to_vec1::<f32>().unwrap()))).collect();
        println!("split {split}: {}", diffs.join(" "));
    }
}
