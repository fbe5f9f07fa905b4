//! Hand-written CPU kernels for the hot paths, where candle's generic path leaves speed on the
//! table: the batched Q4_K and Q6_K matmuls on the stored weights (over Q8_K activations), the
//! batched Q8_0, Q5_0 and Q4_0 matmuls (the latter two on their stored bits, all over Q8_0
//! activations; each checks CPU features at run time and reports `None` when it cannot run,
//! so callers fall back to candle), decode-step attention on plain slices, and vectorisable
//! scalar math.

/// `$body` with the const `$R` set to `$rows` (1 to `$max`, 4 or 8; more rows take `$max`): the
/// one place the kernels turn a run-time row count into the const generic their passes are
/// compiled for.
macro_rules! with_rows {
    (4, $rows:expr, $R:ident => $body:expr) => {
        match $rows {
            1 => { const $R: usize = 1; $body }
            2 => { const $R: usize = 2; $body }
            3 => { const $R: usize = 3; $body }
            _ => { const $R: usize = 4; $body }
        }
    };
    (8, $rows:expr, $R:ident => $body:expr) => {
        match $rows {
            1 => { const $R: usize = 1; $body }
            2 => { const $R: usize = 2; $body }
            3 => { const $R: usize = 3; $body }
            4 => { const $R: usize = 4; $body }
            5 => { const $R: usize = 5; $body }
            6 => { const $R: usize = 6; $body }
            7 => { const $R: usize = 7; $body }
            _ => { const $R: usize = 8; $body }
        }
    };
}

pub mod attention;
mod avx2;
pub mod q4_k;
pub mod q5_0;
pub mod q6_k;
pub mod q8_k;
pub use deal_backend::math;
pub mod q8_0;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, Storage, StorageRef, Tensor};

/// Whether this CPU has AVX-512F, for the vector paths that need only it; the packed matmuls
/// pick their instruction set with [`isa`].
#[cfg(target_arch = "x86_64")]
pub use deal_backend::math::has_avx512f;

/// The instruction set the packed matmul kernels run with. Both run the same tiles and add
/// up the same exact integers in the same float order, so they give the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F/BW with VNNI (`vpdpbusd`): 16 outputs per vector, up to 8 rows per pass.
    Avx512Vnni,
    /// AVX2 with FMA and F16C (`vpmaddubsw` + `vpmaddwd` for `vpdpbusd`): 8 outputs per
    /// vector, each tile in two halves, up to 4 rows per pass.
    Avx2,
}

impl Isa {
    /// Whether this CPU can run it.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            match self {
                Isa::Avx512Vnni => has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
                Isa::Avx2 => has!("avx2") && has!("fma") && has!("f16c"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// Activation rows one pass over a weight tile serves.
    pub(crate) fn rows_per_pass(self) -> usize {
        match self {
            Isa::Avx512Vnni => 8,
            Isa::Avx2 => 4,
        }
    }
}

/// What runs the quantized matmuls on this CPU, in words (for `deal info` and benchmarks).
pub fn describe() -> &'static str {
    match isa() {
        Some(Isa::Avx512Vnni) => "deal's packed kernels, AVX-512 VNNI",
        Some(Isa::Avx2) => "deal's packed kernels, AVX2",
        None => "candle's kernels (no AVX-512 VNNI or AVX2, or DEAL_KERNELS=candle)",
    }
}

/// The packed kernels' instruction set on this CPU: AVX-512 VNNI where present, else AVX2;
/// `None` where neither is (the callers then run candle's kernels, which have portable
/// paths). `DEAL_KERNELS=avx2` takes the AVX2 path on an AVX-512 CPU and `DEAL_KERNELS=candle`
/// turns the packed kernels off (both for measurements). Read once per process.
pub fn isa() -> Option<Isa> {
    static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let wanted = std::env::var("DEAL_KERNELS").unwrap_or_default();
        match wanted.as_str() {
            "candle" => None,
            "avx2" => Some(Isa::Avx2).filter(|i| i.supported()),
            _ => [Isa::Avx512Vnni, Isa::Avx2].into_iter().find(|i| i.supported()),
        }
    })
}

/// `isa`, or an error when this CPU cannot run it (the `matmul_with` entry points that tests
/// and benchmarks use to run one path on purpose).
pub(crate) fn check_isa(isa: Isa) -> crate::Result<Isa> {
    if isa.supported() {
        Ok(isa)
    } else {
        Err(crate::Error::invalid(format!("this CPU cannot run the {isa:?} kernels")))
    }
}

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

/// Output rows per weight tile of the packed matmul kernels.
pub(crate) const TILE: usize = 16;

/// The driver shared by the packed matmul kernels: `[m, n]` outputs, row-major, computed tile
/// by tile (16 outputs) on candle's persistent thread pool (the same threads candle's own
/// matmuls use, so the two never oversubscribe the cores), `rows_per_pass` (≤ 8) activation
/// rows at a time. `pass(tile, r0, rows, first, out, stride)` writes rows `r0..r0 + rows` of
/// the tile's 16 outputs to `out + r * stride`; `first` marks a tile's first pass (the one
/// that streams its weights from memory). A last tile narrower than 16 goes through a
/// scratch buffer.
pub(crate) fn tiled_matmul<F>(n: usize, m: usize, rows_per_pass: usize, pass: F) -> Vec<f32>
where
    F: Fn(usize, usize, usize, bool, *mut f32, usize) + Sync,
{
    let rows_per_pass = rows_per_pass.clamp(1, 8);
    let tiles = n.div_ceil(TILE);
    // every element is written below (each tile's columns of every row), so the buffer is
    // not zeroed first: a logits pass is 1 MB per row at a 262k vocabulary
    let mut dst: Vec<f32> = Vec::with_capacity(m * n);
    let dst_ptr = dst.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(tiles, |range| {
        for t in range {
            let width = TILE.min(n - t * TILE);
            let mut scratch = [0f32; TILE * 8];
            let mut r0 = 0;
            while r0 < m {
                let rows = (m - r0).min(rows_per_pass);
                let (out, stride) = if width == TILE {
                    // SAFETY: tile `t` writes columns [16t, 16t+16) of rows r0..r0+rows,
                    // inside dst (m x n) and disjoint from every other tile's columns.
                    (unsafe { (dst_ptr as *mut f32).add(r0 * n + t * TILE) }, n)
                } else {
                    (scratch.as_mut_ptr(), TILE)
                };
                pass(t, r0, rows, r0 == 0, out, stride);
                if width < TILE {
                    for r in 0..rows {
                        // SAFETY: row r0+r, columns [16t, 16t+width) of dst, owned by tile t.
                        unsafe {
                            std::ptr::copy_nonoverlapping(scratch.as_ptr().add(r * TILE), (dst_ptr as *mut f32).add((r0 + r) * n + t * TILE), width)
                        };
                    }
                }
                r0 += rows;
            }
        }
    });
    // SAFETY: the tiles cover columns [0, n) of rows [0, m) (full tiles in place, the last
    // narrower one through its scratch buffer), so all m * n values are initialised.
    unsafe { dst.set_len(m * n) };
    dst
}

/// Repack row-major quantized `rows` (each `kb` blocks of `block_bytes`) into tiles of 16
/// rows, `kb` tile-blocks per tile, on every core: `fill(tile_block, lane, src_block)` copies
/// row `lane` of a tile's block in. Rows past the end leave `empty` in place.
///
/// The buffer is asked for 2 MiB pages before any page is touched ([`advise_huge_pages`]),
/// and each worker touches its own tiles first: page faults, and the kernel's zeroing of
/// every new page, run on all cores instead of on the caller's thread alone.
///
/// Rows read from the memory-mapped file are dropped from the resident set as their tiles
/// are packed, a megabyte at a time ([`MappedRelease`]): a load never holds a large
/// tensor twice (its file pages and its packed copy).
pub(crate) fn pack_tiles<B, F>(rows: &SourceRows, kb: usize, block_bytes: usize, empty: B, fill: F) -> Vec<B>
where
    B: Clone + Send + Sync,
    F: Fn(&mut B, usize, &[u8]) + Sync,
{
    let tiles = rows.len().div_ceil(TILE);
    let n = tiles * kb;
    let mut blocks: Vec<B> = Vec::with_capacity(n);
    if n == 0 {
        return blocks;
    }
    advise_huge_pages(blocks.as_ptr() as *const u8, n * std::mem::size_of::<B>());
    let workers = std::thread::available_parallelism().map_or(1, |w| w.get()).max(1);
    let per = tiles.div_ceil(workers).max(1);
    std::thread::scope(|s| {
        for (w, chunk) in blocks.spare_capacity_mut()[..n].chunks_mut(per * kb).enumerate() {
            let (fill, empty) = (&fill, &empty);
            s.spawn(move || {
                let mut release = MappedRelease::default();
                let mut requantizer = RowRequantizer::default();
                for (i, tile) in chunk.chunks_mut(kb).enumerate() {
                    for slot in tile.iter_mut() {
                        slot.write(empty.clone());
                    }
                    // SAFETY: every slot of `tile` was initialised just above.
                    let tile = unsafe { &mut *(tile as *mut [std::mem::MaybeUninit<B>] as *mut [B]) };
                    let t = w * per + i;
                    for lane in 0..TILE {
                        let Some((stored, mapped)) = rows.get(t * TILE + lane) else { break };
                        let row = match rows.requantized(t * TILE + lane) {
                            // every part's type and first row were checked by
                            // `with_requantized_rows`, and a part's rows are all aligned alike
                            Some(dtype) => requantizer.q8_0(dtype, stored, rows.k).expect("rows checked before packing"),
                            None => stored,
                        };
                        for (b, blk) in tile.iter_mut().enumerate() {
                            fill(blk, lane, &row[b * block_bytes..(b + 1) * block_bytes]);
                        }
                        if mapped {
                            release.done(row);
                        }
                    }
                }
            });
        }
    });
    // SAFETY: the chunks cover the first `n` slots and each worker initialised every slot of
    // its chunk (a worker's panic propagates out of the scope before this line).
    unsafe { blocks.set_len(n) };
    blocks
}

/// Source bytes a packing worker has finished with, dropped from the resident set once a
/// megabyte of them is contiguous (see [`crate::gguf::release_pages_within`]); only for
/// bytes of the memory-mapped file, which later reads fault back in from the page cache.
/// Only whole pages inside the finished range go, so a page another worker still reads
/// stays (and would only be read again if dropped).
#[derive(Default)]
pub(crate) struct MappedRelease {
    /// Start and end address of the finished, contiguous bytes not yet released.
    pending: Option<(usize, usize)>,
}

impl MappedRelease {
    const CHUNK: usize = 1 << 20;

    /// `bytes` (of the mapped file) are finished with.
    pub(crate) fn done(&mut self, bytes: &[u8]) {
        let (start, end) = (bytes.as_ptr() as usize, bytes.as_ptr() as usize + bytes.len());
        self.pending = match self.pending {
            Some((s, e)) if e == start => Some((s, end)),
            other => {
                if let Some((s, e)) = other {
                    crate::gguf::release_pages_within(s, e);
                }
                Some((start, end))
            }
        };
        if let Some((s, e)) = self.pending.filter(|(s, e)| e - s >= Self::CHUNK) {
            crate::gguf::release_pages_within(s, e);
            self.pending = None;
        }
    }
}

impl Drop for MappedRelease {
    fn drop(&mut self) {
        if let Some((s, e)) = self.pending.take() {
            crate::gguf::release_pages_within(s, e);
        }
    }
}

/// A weight's stored bytes: `n` rows of `k` values of type `dtype`, row-major, as in the
/// GGUF file (borrowed from the memory-mapped file, or from a loaded [`QTensor`]).
#[derive(Clone, Copy)]
pub struct StoredWeight<'a> {
    /// The rows' bytes.
    pub bytes: &'a [u8],
    /// Their type.
    pub dtype: GgmlDType,
    /// Rows (outputs).
    pub n: usize,
    /// Values per row (inputs).
    pub k: usize,
    /// The bytes lie in the memory-mapped GGUF file: a packer drops their pages from the
    /// resident set once it has copied them. Never set for bytes in memory the process owns
    /// (a loaded tensor's), whose pages that would zero.
    pub mapped: bool,
}

/// Every row of one or more [`StoredWeight`]s stacked (fused projections), each with
/// whether it lies in the mapped file.
pub(crate) struct SourceRows<'a> {
    rows: Vec<(&'a [u8], bool)>,
    /// Parts re-quantized to Q8_0 row by row as they are packed (see
    /// [`with_requantized_rows`]): each such part's first row index and stored type.
    requantize: Vec<(std::ops::Range<usize>, GgmlDType)>,
    /// Values per row.
    k: usize,
}

impl<'a> SourceRows<'a> {
    /// Number of rows.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Row `i`'s bytes and whether they lie in the mapped file.
    pub(crate) fn get(&self, i: usize) -> Option<(&'a [u8], bool)> {
        self.rows.get(i).copied()
    }

    /// The stored type of row `i` if it is to be re-quantized to Q8_0 as it is packed.
    fn requantized(&self, i: usize) -> Option<GgmlDType> {
        self.requantize.iter().find(|(rows, _)| rows.contains(&i)).map(|p| p.1)
    }
}

/// Re-quantizes rows of another type to Q8_0 bytes (34 per 32 values), bit for bit what
/// [`crate::model::layers::requantize_q8`] gives, in buffers reused from row to row.
#[derive(Default)]
struct RowRequantizer {
    values: Vec<f32>,
    bytes: Vec<u8>,
}

impl RowRequantizer {
    /// `row` (of type `dtype`, `k` values) as Q8_0 bytes; `None` if it cannot be dequantized.
    fn q8_0(&mut self, dtype: GgmlDType, row: &[u8], k: usize) -> Option<&[u8]> {
        self.values.resize(k, 0.0);
        if !crate::gguf::dequantize_into(dtype, row, &mut self.values) {
            return None;
        }
        self.bytes.resize(k / 32 * 34, 0);
        q8_0::quantize_blocks(&self.values, &mut self.bytes, q8_0::quantizer_is_vector());
        Some(&self.bytes)
    }
}

/// `f` on the stored bytes of `ts`; `None` (no call) when a tensor is not a 2-D CPU tensor.
pub(crate) fn with_stored<T>(
    ts: &[&QTensor],
    f: impl FnOnce(&[StoredWeight]) -> crate::Result<Option<T>>,
) -> crate::Result<Option<T>> {
    let mut datas = Vec::with_capacity(ts.len());
    for t in ts {
        let Ok((n, k)) = t.shape().dims2() else { return Ok(None) };
        if !t.device().is_cpu() {
            return Ok(None);
        }
        datas.push((t.data()?, t.dtype(), n, k));
    }
    let parts: Vec<StoredWeight> = datas.iter().map(|(d, dtype, n, k)| StoredWeight { bytes: d, dtype: *dtype, n: *n, k: *k, mapped: false }).collect();
    f(&parts)
}

/// The stored rows of `parts` stacked along `n` (fused projections), for a kernel on
/// `dtype`: `f(rows, k)` gets every row's bytes and the common width. `None` (no call) when a
/// part is of another type, or its width differs from the first's or is not a whole number
/// of blocks.
pub(crate) fn with_stacked_rows<T>(
    parts: &[StoredWeight],
    dtype: GgmlDType,
    f: impl FnOnce(&SourceRows, usize) -> T,
) -> crate::Result<Option<T>> {
    let Some(k) = parts.first().map(|p| p.k) else { return Ok(None) };
    if parts.iter().any(|p| p.dtype != dtype || p.k != k) || k % dtype.block_size() != 0 {
        return Ok(None);
    }
    let row_bytes = k / dtype.block_size() * dtype.type_size();
    let mut rows = Vec::new();
    for p in parts {
        if p.bytes.len() != p.n * row_bytes {
            return Err(crate::Error::Gguf(format!("{dtype:?} tensor has {} bytes, expected {}", p.bytes.len(), p.n * row_bytes)));
        }
        rows.extend(p.bytes.chunks_exact(row_bytes).map(|r| (r, p.mapped)));
    }
    Ok(Some(f(&SourceRows { rows, requantize: Vec::new(), k }, k)))
}

/// [`with_stacked_rows`] for the Q8_0 kernel where parts of other types are re-quantized to
/// Q8_0 as they are packed, row by row in a reused buffer: no re-quantized copy of a whole
/// tensor is made (on a model of mostly Q5_0 weights, that copy's page faults and extra pass
/// over memory were a third of the load). `None` (no call) when a part's type cannot be
/// dequantized, its bytes are not aligned for its block type, or `k` is not a whole number
/// of 32-value blocks and of the part's blocks.
pub(crate) fn with_requantized_rows<T>(parts: &[StoredWeight], f: impl FnOnce(&SourceRows, usize) -> T) -> crate::Result<Option<T>> {
    let Some(k) = parts.first().map(|p| p.k) else { return Ok(None) };
    let (mut rows, mut requantize) = (Vec::new(), Vec::new());
    for p in parts {
        if p.k != k || k % 32 != 0 || k % p.dtype.block_size() != 0 {
            return Ok(None);
        }
        let row_bytes = k / p.dtype.block_size() * p.dtype.type_size();
        if p.bytes.len() != p.n * row_bytes {
            return Err(crate::Error::Gguf(format!("{:?} tensor has {} bytes, expected {}", p.dtype, p.bytes.len(), p.n * row_bytes)));
        }
        if p.dtype != GgmlDType::Q8_0 {
            // the type is handled and its rows aligned (a row is a whole number of blocks, so
            // all rows of the part are aligned as the first)
            if p.n > 0 && !crate::gguf::dequantize_into(p.dtype, &p.bytes[..row_bytes], &mut vec![0f32; k]) {
                return Ok(None);
            }
            requantize.push((rows.len()..rows.len() + p.n, p.dtype));
        }
        rows.extend(p.bytes.chunks_exact(row_bytes).map(|r| (r, p.mapped)));
    }
    Ok(Some(f(&SourceRows { rows, requantize, k }, k)))
}

/// Prefetch share `part` of `parts` of tile-block `blocks[at]`'s cache lines into L1 (nothing
/// past the end of `blocks`): the kernels spread one block's prefetch over its steps.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_share<B>(blocks: &[B], at: usize, part: usize, parts: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    if at >= blocks.len() {
        return;
    }
    let lines = std::mem::size_of::<B>().div_ceil(64);
    let per = lines.div_ceil(parts);
    let p = blocks[at..].as_ptr() as *const i8;
    for line in part * per..((part + 1) * per).min(lines) {
        // SAFETY: a prefetch is only a hint: it never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line * 64)) };
    }
}

/// Ask for 2 MiB pages on the whole 2 MiB-aligned part of `[ptr, ptr + len)` (Linux only; a
/// no-op elsewhere, and harmless if refused), where the system allows it
/// (`/sys/kernel/mm/transparent_hugepage/enabled` = `always` or `madvise`).
/// `DEAL_HUGE_PAGES=0` turns it off (for A/B measurements).
///
/// Streaming weights through 4 KiB pages costs a TLB miss every 4 KiB and stops the
/// hardware prefetchers at every page boundary; on 2 MiB pages a kernel that reads its
/// weights from memory runs close to the machine's bandwidth (`deal bench kernel` shows
/// both).
pub(crate) fn advise_huge_pages(ptr: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    if std::env::var_os("DEAL_HUGE_PAGES").is_none_or(|v| v != "0") {
        const HUGE: usize = 2 << 20;
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + len) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside an allocation this process owns; MADV_HUGEPAGE
            // only changes how the kernel backs it, never its contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}
