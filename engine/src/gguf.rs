//! Reading GGUF files: metadata with typed, named errors, and tensors onto a device.
//!
//! Thin layer over `candle_core::quantized::gguf_file`: the file is memory-mapped, so a
//! tensor's stored bytes are read in place ([`GgufFile::tensor_bytes`]) and copied once at
//! most (into a [`QTensor`], or straight into a kernel's packed layout), with no read
//! buffer in between; and "key missing / wrong type" becomes an [`Error::Gguf`] message that
//! names the key.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use memmap2::Mmap;

use crate::{Error, Result};

/// An open GGUF file: parsed header and metadata, and the file mapped into memory.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    map: Arc<Mmap>,
}

impl GgufFile {
    /// Open and parse the header of a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        // SAFETY: the map is read only. As every engine that maps its weights (llama.cpp,
        // candle's safetensors loader) we rely on nobody truncating or rewriting the file while
        // it is open; the tensors are copied out of the map while the model loads.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io { path: path.clone(), source })?;
        let content = Content::read(&mut std::io::Cursor::new(&map[..]))
            .map_err(|e| Error::Gguf(format!("{}: not a readable GGUF file: {e}", path.display())))?;
        Ok(Self { path, content, map: Arc::new(map) })
    }

    /// A 2-D tensor whose rows are read in place from the map, one at a time, as stored
    /// (the token embedding: a step looks up a few rows of it, so the rest never needs to be
    /// resident). `None` when its rows are not whole blocks of a type [`dequantize_into`]
    /// handles.
    pub fn mapped_rows(&self, name: &str) -> Result<Option<MappedRows>> {
        let (bytes, dtype, dims) = self.tensor_bytes(name)?;
        let [rows, width] = dims[..] else { return Ok(None) };
        if width % dtype.block_size() != 0 || !dequantize_into(dtype, &[], &mut []) {
            return Ok(None);
        }
        let start = bytes.as_ptr() as usize - self.map.as_ptr() as usize;
        let row_bytes = width / dtype.block_size() * dtype.type_size();
        Ok(Some(MappedRows { map: self.map.clone(), start, rows, width, dtype, row_bytes }))
    }

    /// A tensor's stored bytes in the mapped file, with its type and shape; bounds are
    /// checked against the file's size.
    pub fn tensor_bytes(&self, name: &str) -> Result<(&[u8], GgmlDType, Vec<usize>)> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::Gguf(format!("{}: missing tensor `{name}`", self.path.display())))?;
        let (dtype, dims) = (info.ggml_dtype, info.shape.dims().to_vec());
        let elems = info.shape.elem_count();
        if elems % dtype.block_size() != 0 {
            return Err(Error::Gguf(format!("tensor `{name}`: {elems} values are not whole {dtype:?} blocks")));
        }
        let len = elems / dtype.block_size() * dtype.type_size();
        let start = self.content.tensor_data_offset.checked_add(info.offset).and_then(|s| usize::try_from(s).ok());
        match start.and_then(|s| Some(s..s.checked_add(len)?)).and_then(|r| self.map.get(r)) {
            Some(bytes) => Ok((bytes, dtype, dims)),
            None => Err(Error::Gguf(format!("tensor `{name}`: its {len} bytes lie past the end of the file"))),
        }
    }

    /// Drop the vocabulary arrays (`tokenizer.ggml.tokens`, `.scores`, `.token_type`,
    /// `.merges`) from the parsed metadata, once a [`crate::tokenizer::GgufTokenizer`] holds
    /// its own compact copy: a 262k vocabulary's are ~30 MB of small values, which would
    /// otherwise stay resident while the weights load. The freed memory goes back to the
    /// system.
    pub fn release_vocab(&mut self) {
        for key in ["tokens", "scores", "token_type", "merges"] {
            self.content.metadata.remove(&format!("tokenizer.ggml.{key}"));
        }
        return_freed_memory();
    }

    /// Path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header (metadata and tensor infos).
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// The `general.architecture` string.
    pub fn architecture(&self) -> Result<String> {
        Ok(get_str(&self.content, "general.architecture")?.to_string())
    }

    /// Whether a tensor with this name exists.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Read one tensor onto `device`, in its stored quantization (one copy out of the map).
    /// The mapped pages it came from are then released from this process (the page cache
    /// keeps them), so a load holds the file's pages and their copies only tensor by tensor,
    /// not all at once.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let (bytes, dtype, dims) = self.tensor_bytes(name)?;
        let t = candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, bytes, dims, device)
            .map_err(|e| Error::Gguf(format!("tensor `{name}`: {e}")))?;
        release_pages(bytes);
        Ok(t)
    }
}

/// Rows of a tensor read in place from a mapped GGUF file (see [`GgufFile::mapped_rows`]);
/// keeps the map alive.
#[derive(Clone)]
pub struct MappedRows {
    map: Arc<Mmap>,
    start: usize,
    rows: usize,
    width: usize,
    dtype: GgmlDType,
    row_bytes: usize,
}

impl MappedRows {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Stored type.
    pub fn dtype(&self) -> GgmlDType {
        self.dtype
    }

    /// Rows `ids`, dequantized, row after row (`ids.len() × width` values); an id past the
    /// last row is an error.
    pub fn gather(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; ids.len() * self.width];
        for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(self.width.max(1))) {
            let id = id as usize;
            if id >= self.rows {
                return Err(Error::invalid(format!("token id {id} is outside the vocabulary of {} tokens", self.rows)));
            }
            let at = self.start + id * self.row_bytes;
            if !dequantize_into(self.dtype, &self.map[at..at + self.row_bytes], dst) {
                return Err(Error::Internal(format!("{:?} row {id} could not be dequantized", self.dtype)));
            }
        }
        Ok(out)
    }
}

/// Dequantize whole blocks of `dtype` (`bytes`) into `out` with candle's own `to_float`;
/// `false` for a type this does not handle (or sizes or an alignment that do not match).
/// With empty slices it only answers whether the type is handled.
pub fn dequantize_into(dtype: GgmlDType, bytes: &[u8], out: &mut [f32]) -> bool {
    use candle_core::quantized::k_quants::*;
    fn go<B: GgmlType>(bytes: &[u8], out: &mut [f32]) -> bool {
        // SAFETY: the block types are plain old data (f16 scales and integer arrays, or
        // plain floats): any bytes are a valid value; `align_to` only takes the aligned middle.
        let (pre, blocks, post) = unsafe { bytes.align_to::<B>() };
        if !pre.is_empty() || !post.is_empty() || blocks.len() * B::BLCK_SIZE != out.len() {
            return false;
        }
        B::to_float(blocks, out);
        true
    }
    match dtype {
        GgmlDType::F32 => go::<f32>(bytes, out),
        GgmlDType::F16 => go::<half::f16>(bytes, out),
        GgmlDType::BF16 => go::<half::bf16>(bytes, out),
        GgmlDType::Q8_0 => go::<BlockQ8_0>(bytes, out),
        GgmlDType::Q4_0 => go::<BlockQ4_0>(bytes, out),
        GgmlDType::Q4_1 => go::<BlockQ4_1>(bytes, out),
        GgmlDType::Q5_0 => go::<BlockQ5_0>(bytes, out),
        GgmlDType::Q5_1 => go::<BlockQ5_1>(bytes, out),
        GgmlDType::Q2K => go::<BlockQ2K>(bytes, out),
        GgmlDType::Q3K => go::<BlockQ3K>(bytes, out),
        GgmlDType::Q4K => go::<BlockQ4K>(bytes, out),
        GgmlDType::Q5K => go::<BlockQ5K>(bytes, out),
        GgmlDType::Q6K => go::<BlockQ6K>(bytes, out),
        _ => false,
    }
}

/// Drop the mapped pages of `bytes` (rounded out to whole pages) from this process's
/// resident set; they are read again from the page cache if touched later.
pub(crate) fn release_pages(bytes: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = bytes.as_ptr() as usize / PAGE * PAGE;
        let end = (bytes.as_ptr() as usize + bytes.len()).next_multiple_of(PAGE);
        if end > start {
            // SAFETY: the range lies inside a read-only private file mapping we own, and no
            // reference into it outlives this call's callers' copies: MADV_DONTNEED only
            // drops pages, which later reads fault back in from the file.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// Hand the heap's free pages back to the system (glibc keeps freed small allocations
/// resident until asked).
pub(crate) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drop the whole pages inside the mapped bytes `[start, end)` from this process's resident
/// set (rounded in: a page shared with bytes outside stays). Only for addresses inside
/// [`GgufFile`]'s read-only map, whose dropped pages later reads fault back in from the file.
pub(crate) fn release_pages_within(start: usize, end: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let (start, end) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if end > start {
            // SAFETY: as in `release_pages`: whole pages of the read-only file mapping, which
            // the callers only read.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, end);
}

/// A metadata value, or a "missing key" error naming it.
pub fn get<'a>(c: &'a Content, key: &str) -> Result<&'a Value> {
    c.metadata.get(key).ok_or_else(|| Error::Gguf(format!("missing metadata key `{key}`")))
}

fn wrong(key: &str, want: &str, e: impl std::fmt::Display) -> Error {
    Error::Gguf(format!("metadata key `{key}` is not {want}: {e}"))
}

/// A string metadata value.
pub fn get_str<'a>(c: &'a Content, key: &str) -> Result<&'a str> {
    get(c, key)?.to_string().map(|s| s.as_str()).map_err(|e| wrong(key, "a string", e))
}

/// An unsigned integer metadata value (any integer width).
pub fn get_usize(c: &Content, key: &str) -> Result<usize> {
    let v = get(c, key)?;
    let n = match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => *x as i64,
        Value::I64(x) => *x,
        other => return Err(wrong(key, "an integer", format!("{other:?}"))),
    };
    usize::try_from(n).map_err(|e| wrong(key, "a non-negative integer", e))
}

/// A float metadata value (f32 or f64 stored).
pub fn get_f32(c: &Content, key: &str) -> Result<f32> {
    match get(c, key)? {
        Value::F32(x) => Ok(*x),
        Value::F64(x) => Ok(*x as f32),
        other => Err(wrong(key, "a float", format!("{other:?}"))),
    }
}

/// A boolean metadata value.
pub fn get_bool(c: &Content, key: &str) -> Result<bool> {
    get(c, key)?.to_bool().map_err(|e| wrong(key, "a bool", e))
}

/// `Some(value)` if the key exists, `None` if it does not; errors only on a wrong type.
pub fn opt<T>(c: &Content, key: &str, f: impl Fn(&Content, &str) -> Result<T>) -> Result<Option<T>> {
    if c.metadata.contains_key(key) {
        f(c, key).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file;
    use candle_core::Tensor;

    fn write_gguf(path: &Path, t: &QTensor) {
        let mut f = File::create(path).unwrap();
        let arch = Value::String("llama".into());
        gguf_file::write(&mut f, &[("general.architecture", &arch)], &[("w", t)]).unwrap();
    }

    #[test]
    fn tensors_come_out_of_the_map_as_stored_and_a_cut_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("deal-gguf-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.gguf");
        let dev = Device::Cpu;
        let q = QTensor::quantize(&Tensor::randn(0f32, 1.0, (64, 256), &dev).unwrap(), GgmlDType::Q6K).unwrap();
        write_gguf(&path, &q);

        let f = GgufFile::open(&path).unwrap();
        let (bytes, dtype, dims) = f.tensor_bytes("w").unwrap();
        assert_eq!((dtype, dims), (GgmlDType::Q6K, vec![64, 256]));
        assert_eq!(bytes, &q.data().unwrap()[..]);
        let t = f.tensor("w", &dev).unwrap();
        assert_eq!(t.data().unwrap(), q.data().unwrap());
        // the pages released after the copy read back the same bytes
        assert_eq!(f.tensor_bytes("w").unwrap().0, &q.data().unwrap()[..]);
        assert!(matches!(f.tensor_bytes("missing"), Err(Error::Gguf(m)) if m.contains("missing tensor `missing`")));
        drop(f);

        // cut the last 100 bytes off: the header still parses, the tensor does not fit
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 100).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert!(matches!(f.tensor_bytes("w"), Err(Error::Gguf(m)) if m.contains("past the end of the file")));
        assert!(f.tensor("w", &dev).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
