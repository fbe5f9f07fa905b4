use deal_runtime::gguf::GgufFile;
use deal_runtime::model::{LoadOptions, LogitsFor, Model};
use deal_runtime::sampling::argmax;
fn main() {
    let vocab: Vec<String> = serde_json::from_str(&std::fs::read_to_string("/tmp/vocab.json").unwrap()).unwrap();
    let mut f = GgufFile::open(std::env::var("M").unwrap()).unwrap();
    let t0 = std::time::Instant::now();
    let m = Model::load(&mut f, &candle_core::Device::Cpu, &LoadOptions::default()).unwrap();
    eprintln!("load {:?}", t0.elapsed());
    let mut cache = m.new_cache(1).unwrap();
    let mut toks = vec![2u32, 818, 5279, 529, 7001, 563];
    let out = m.forward(&mut cache, &[toks.clone()], LogitsFor::Last).unwrap();
    let mut next = argmax(&out.logits.unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap());
    let t0 = std::time::Instant::now();
    let n = 32;
    for _ in 0..n {
        toks.push(next);
        print!("{}", vocab[next as usize].replace('▁', " "));
        let out = m.forward(&mut cache, &[vec![next]], LogitsFor::Last).unwrap();
        next = argmax(&out.logits.unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap());
    }
    println!();
    eprintln!("{:.1} tok/s", n as f64 / t0.elapsed().as_secs_f64());
}
