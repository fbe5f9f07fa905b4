use deal_runtime::model::LogitsFor;
use deal_runtime::{Engine, EngineOptions};
fn main() {
    let e = Engine::load(deal_runtime::setup::default_model_path(), &EngineOptions::default()).unwrap();
    let prompt = e.encode_prompt("The old lighthouse keeper climbed the stairs and").unwrap();
    let look = e.tokenizer().encode(" looked out at the", false).unwrap();
    let full: Vec<u32> = prompt.iter().chain(&look).copied().collect();
    let fresh = |t: &[u32]| { let (_, o) = e.prefill(t).unwrap(); o.logits.unwrap().get(0).unwrap().to_vec1::<f32>().unwrap() };
    let f = fresh(&full);
    let d = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    // A: single row, prefill then continuation in one pass (no prefix)
    let (mut c, _) = e.prefill(&prompt).unwrap();
    let o = e.model().forward(&mut c, &[look.clone()], LogitsFor::Last).unwrap();
    println!("A no-prefix multi-token: {}", d(&o.logits.unwrap().get(0).unwrap().to_vec1::<f32>().unwrap(), &f));
    // B: single row step by step
    let (mut c, _) = e.prefill(&prompt).unwrap();
    let mut last = vec![];
    for &t in &look { last = e.model().forward(&mut c, &[vec![t]], LogitsFor::Last).unwrap().logits.unwrap().get(0).unwrap().to_vec1::<f32>().unwrap(); }
    println!("B no-prefix stepwise: {}", d(&last, &f));
    // C: fork(1)->promote, then continuation
    let (mut c, _) = e.prefill(&prompt).unwrap();
    c.promote_prefix().unwrap();
    let o = e.model().forward(&mut c, &[look.clone()], LogitsFor::Last).unwrap();
    println!("C prefix, 1 row: {}", d(&o.logits.unwrap().get(0).unwrap().to_vec1::<f32>().unwrap(), &f));
    // D: fork 2 same
    let (mut c, _) = e.prefill(&prompt).unwrap();
    c.fork(2).unwrap();
    let o = e.model().forward(&mut c, &[look.clone(), look.clone()], LogitsFor::Last).unwrap();
    println!("D prefix, 2 rows same: {}", d(&o.logits.unwrap().get(1).unwrap().to_vec1::<f32>().unwrap(), &f));
    // E: no prefix, 2 rows? (new cache 2 rows, ragged prefill)
    let mut c = e.model().new_cache(2).unwrap();
    let short: Vec<u32> = full[..full.len()-2].to_vec();
    let o = e.model().forward(&mut c, &[full.clone(), short.clone()], LogitsFor::Last).unwrap();
    let l = o.logits.unwrap();
    println!("E ragged 2 rows no prefix: {} {}", d(&l.get(0).unwrap().to_vec1::<f32>().unwrap(), &f), d(&l.get(1).unwrap().to_vec1::<f32>().unwrap(), &fresh(&short)));
}
