use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
fn main() {
    let dev = Device::Cpu;
    for dt in [GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
        let w = Tensor::randn(0f32, 1.0, (1024, 2048), &dev).unwrap();
        let q = QMatMul::from_qtensor(QTensor::quantize(&w, dt).unwrap()).unwrap();
        let x = Tensor::randn(0f32, 1.0, (13, 2048), &dev).unwrap();
        let all = q.forward(&x).unwrap();
        for m in [1usize, 2, 3, 4, 5, 8, 9] {
            let part = q.forward(&x.narrow(0, 0, m).unwrap()).unwrap();
            let d = (all.narrow(0, 0, m).unwrap() - &part).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            print!("{dt:?} m={m}: {d:.4}  ");
        }
        println!();
    }
    // f32 matmul
    let a = Tensor::randn(0f32, 1.0, (1, 1, 13, 256), &dev).unwrap();
    let b = Tensor::randn(0f32, 1.0, (1, 1, 13, 256), &dev).unwrap();
    let full = a.matmul(&b.t().unwrap()).unwrap();
    let part = a.narrow(2, 0, 5).unwrap().matmul(&b.t().unwrap()).unwrap();
    println!("f32 {}", (full.narrow(2,0,5).unwrap() - part).unwrap().abs().unwrap().max_all().unwrap());
}
