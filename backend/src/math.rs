//! Scalar math written so that loops over it vectorise: `e^x` for softmax-style arguments,
//! and the CPU-feature check the vector paths share (the engine's kernels use both).

/// Whether this CPU has AVX-512F (std caches the detection), for the vector paths that need
/// only it.
#[cfg(target_arch = "x86_64")]
pub fn has_avx512f() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// `e^x` for `x <= 0` (softmax and sampling arguments, after subtracting the maximum),
/// branch-free so that loops over it vectorise: Cody-Waite range reduction and a degree-6
/// polynomial (Cephes' `expf` coefficients), within 2 ulp of `f32::exp`. Arguments below
/// -87 give about 1e-38 instead of a subnormal.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let x = x.clamp(-87.0, 0.0);
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0; // round to nearest
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    f32::from_bits(((n as i32 + 127) as u32) << 23) * y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_two_ulp_of_std() {
        let mut worst = 0f32;
        for i in 0..=87_000 {
            let x = -(i as f32) / 1000.0;
            let (got, want) = (exp_nonpositive(x), x.exp());
            worst = worst.max((got - want).abs() / want.max(f32::MIN_POSITIVE));
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e30) > 0.0 && exp_nonpositive(-1e30) < 1e-37);
    }
}
