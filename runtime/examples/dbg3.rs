use deal_runtime::model::LogitsFor;
use deal_runtime::{Engine, EngineOptions};
fn main() {
    let e = Engine::load(deal_runtime::setup::default_model_path(), &EngineOptions::default()).unwrap();
    let full = e.encode_prompt("The old lighthouse keeper climbed the stairs and looked out at the").unwrap();
    let mut a = e.model().new_cache(1).unwrap();
    e.model().forward(&mut a, &[full.clone()], LogitsFor::None).unwrap();
    for split in [3usize] {
        let mut b = e.model().new_cache(1).unwrap();
        e.model().forward(&mut b, &[full[..split].to_vec()], LogitsFor::None).unwrap();
        let mut s = vec![];
        for l in 0usize..8 {
            let ka = a.layer_kv(l).unwrap().suffix.unwrap().0.narrow(2, 0, split).unwrap();
            let kb = b.layer_kv(l).unwrap().suffix.unwrap().0;
            let d = (ka - kb).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            s.push(format!("L{l} {d:.4}"));
        }
        println!("split {split}: {}", s.join(" "));
    }
}
