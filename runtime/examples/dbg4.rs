use deal_runtime::model::LogitsFor;
use deal_runtime::{Engine, EngineOptions};
fn main() {
    let e = Engine::load(deal_runtime::setup::default_model_path(), &EngineOptions::default()).unwrap();
    let prompt = e.encode_prompt("My favourite thing about the summer is").unwrap();
    let conts: Vec<Vec<u32>> = [" the", " going to the beach", " long evenings with", " that"].iter().map(|s| e.tokenizer().encode(s, false).unwrap()).collect();
    let d = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let am = |a: &[f32]| deal_runtime::sampling::argmax(a);
    let top2 = |a: &[f32]| { let t = deal_runtime::sampling::top_k(a, 2); (t[0].0, t[0].1 - t[1].1) };
    let (mut cache, _) = e.prefill(&prompt).unwrap();
    cache.fork(conts.len()).unwrap();
    let l = e.model().forward(&mut cache, &conts, LogitsFor::Last).unwrap().logits.unwrap();
    for (r, c) in conts.iter().enumerate() {
        let got = l.get(r).unwrap().to_vec1::<f32>().unwrap();
        let full: Vec<u32> = prompt.iter().chain(c).copied().collect();
        let (_, o) = e.prefill(&full).unwrap();
        let fresh = o.logits.unwrap().get(0).unwrap().to_vec1::<f32>().unwrap();
        let (mut c1, _) = e.prefill(&prompt).unwrap();
        c1.promote_prefix().unwrap();
        let same = e.model().forward(&mut c1, &[c.clone()], LogitsFor::Last).unwrap().logits.unwrap().get(0).unwrap().to_vec1::<f32>().unwrap();
        println!("row {r}: vs fresh {:.3} (top {:?} vs {:?}); vs same-schedule alone {:.4} (top {} vs {})", d(&got, &fresh), top2(&got), top2(&fresh), d(&got, &same), am(&got), am(&same));
    }
}
