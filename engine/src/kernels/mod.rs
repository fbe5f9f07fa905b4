//! Hand-written CPU kernels for the hot paths, where candle's generic path leaves speed on the
//! table: the batched Q4_K matmul on the stored 4-bit weights, the batched Q8_0 matmul (checks CPU features at run time and reports `None` when it
//! cannot run, so callers fall back to candle), decode-step attention on plain slices, and
//! vectorisable scalar math.

pub mod attention;
pub mod q4_k;
pub use deal_backend::math;
pub mod q8_0;

use candle_core::{CpuStorage, Storage, StorageRef, Tensor};

/// Whether this CPU has AVX-512F, for the vector paths that need only it; the Q8_0 matmul
/// checks its wider set in [`q8_0::available`].
#[cfg(target_arch = "x86_64")]
pub use deal_backend::math::has_avx512f;

/// Read access to the values of a contiguous f32 CPU tensor, without a copy. Holds the
/// tensor's storage read lock while alive.
pub struct CpuSlice<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> CpuSlice<'a> {
    /// `None` unless `t` is an f32 CPU tensor laid out contiguously.
    pub fn of(t: &'a Tensor) -> Option<Self> {
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        match &*guard {
            Storage::Cpu(CpuStorage::F32(_)) => Some(Self { guard, start, end }),
            _ => None,
        }
    }

    /// The values.
    pub fn get(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            _ => &[],
        }
    }
}
