//! Reading GGUF files: metadata with typed, named errors, and tensors onto a device.
//!
//! Thin layer over `candle_core::quantized::gguf_file`: it owns the open file so tensors
//! can be read lazily, and turns "key missing / wrong type" into [`Error::Gguf`] messages
//! that name the key.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

use crate::{Error, Result};

/// An open GGUF file: parsed header and metadata, plus a reader for tensor data.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Open and parse the header of a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)
            .map_err(|e| Error::Gguf(format!("{}: not a readable GGUF file: {e}", path.display())))?;
        Ok(Self { path, content, reader })
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

    /// Read one tensor onto `device`, in its stored quantization.
    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            return Err(Error::Gguf(format!("{}: missing tensor `{name}`", self.path.display())));
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| Error::Gguf(format!("tensor `{name}`: {e}")))
    }
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
