//! A batched KV cache built for tree search over one prompt.
//!
//! Layout: an immutable **shared prefix** (per layer `[n_kv_heads, P, head_dim]`, held once
//! behind an `Arc` however many rows use it) plus a per-row **suffix** (per layer
//! `[rows, n_kv_heads, capacity, head_dim]`, preallocated and written in place). Each suffix
//! column ("slot") records, per row, the position of the token stored there, or `EMPTY`.
//! Attention masks are built from those positions, so rows of different lengths batch together
//! and a row can be cut back without moving any data.
//!
//! Search operations:
//! - [`KvCache::select`]: reorder / drop / duplicate rows (beam pruning, forking). Selecting
//!   several rows out of a single-row cache first **promotes** that row into the shared prefix,
//!   so forking a prompt into n rows copies nothing per row.
//! - [`KvCache::truncate`]: cut a row back to a length (undo a lookahead); slots freed at the
//!   end of every row are reused by the next step.
//! - [`KvCache::deep_clone`]: an independent copy (the prefix stays shared).
//!
//! The model writes through [`KvCache::begin_step`] (reserve slots, build masks) and
//! [`KvCache::write_layer`]; it reads with [`KvCache::layer_kv`].

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Slot marker: nothing valid stored here for this row.
const EMPTY: i32 = -1;
/// Additive mask value for a forbidden key. Finite so that a fully masked (padding) query
/// row yields a uniform softmax instead of NaN.
const MASKED: f32 = -1e30;
/// Suffix capacity grows in multiples of this many slots.
const CAP_STEP: usize = 16;

/// Geometry of the cache: one per model.
#[derive(Debug, Clone, Copy)]
pub struct CacheShape {
    /// Transformer layers (one key and one value tensor each).
    pub n_layers: usize,
    /// Key/value heads per layer.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// Keys and values of the shared prefix, per layer `[n_kv_heads, len, head_dim]`.
#[derive(Debug)]
struct SharedPrefix {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
}

/// Per-row bookkeeping.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    /// Logical length: positions `0..len` are stored (prefix + valid suffix slots).
    len: usize,
    /// Position stored in each suffix slot, or `EMPTY`; `slots.len() == used`.
    slots: Vec<i32>,
}

/// Masks and positions for one forward step, produced by [`KvCache::begin_step`].
#[derive(Debug)]
pub struct StepInfo {
    /// Position of every new token, row-major `[rows, t]` (padding repeats the row's last
    /// new position).
    pub positions: Vec<u32>,
    /// Additive mask for global layers, `[rows, 1, 1, t, prefix + slots]`.
    pub mask_global: Tensor,
    /// Additive mask for sliding-window layers, when the model has them.
    pub mask_local: Option<Tensor>,
    /// Number of new tokens per row (before padding).
    pub new_tokens: Vec<usize>,
    /// Slot offset the new keys/values are written at.
    pub write_offset: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub struct KvCache {
    shape: CacheShape,
    device: Device,
    dtype: DType,
    prefix: Option<Arc<SharedPrefix>>,
    /// Per layer (k, v) suffix buffers `[rows, n_kv_heads, cap, head_dim]`; `None` until first write.
    suffix: Vec<Option<(Tensor, Tensor)>>,
    cap: usize,
    used: usize,
    rows: Vec<Row>,
}

impl KvCache {
    /// An empty cache with `rows` rows of length 0.
    pub fn new(shape: CacheShape, rows: usize, device: &Device, dtype: DType) -> Result<Self> {
        if rows == 0 {
            return Err(Error::invalid("a KV cache needs at least one row"));
        }
        Ok(Self {
            shape,
            device: device.clone(),
            dtype,
            prefix: None,
            suffix: vec![None; shape.n_layers],
            cap: 0,
            used: 0,
            rows: vec![Row { len: 0, slots: Vec::new() }; rows],
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Logical length (tokens stored) of row `r`.
    pub fn row_len(&self, r: usize) -> Result<usize> {
        self.rows.get(r).map(|row| row.len).ok_or_else(|| self.bad_row(r))
    }

    /// Lengths of all rows.
    pub fn row_lens(&self) -> Vec<usize> {
        self.rows.iter().map(|r| r.len).collect()
    }

    /// Length of the shared prefix (0 if none).
    pub fn prefix_len(&self) -> usize {
        self.prefix.as_ref().map_or(0, |p| p.len)
    }

    /// Suffix slots in use (columns attended to beyond the prefix).
    pub fn slots_used(&self) -> usize {
        self.used
    }

    /// Bytes held by this cache's suffix buffers plus the shared prefix.
    pub fn memory_bytes(&self) -> usize {
        let per = self.dtype.size_in_bytes() * self.shape.n_kv_heads * self.shape.head_dim;
        let suffix = 2 * self.shape.n_layers * self.rows.len() * self.cap * per;
        let prefix = 2 * self.shape.n_layers * self.prefix_len() * per;
        suffix + prefix
    }

    fn bad_row(&self, r: usize) -> Error {
        Error::invalid(format!("row {r} out of range (cache has {} rows)", self.rows.len()))
    }

    /// Reorder, drop or duplicate rows: row `i` of the result is row `indices[i]` of `self`.
    ///
    /// If the cache has exactly one row and `indices` has more than one entry, that row is
    /// first promoted into the shared prefix: the forked rows then share it without copies.
    pub fn select(&mut self, indices: &[usize]) -> Result<()> {
        if indices.is_empty() {
            return Err(Error::invalid("select needs at least one row index"));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.rows.len()) {
            return Err(self.bad_row(bad));
        }
        if self.rows.len() == 1 && indices.len() > 1 {
            self.promote_prefix()?;
        }
        let identity = indices.len() == self.rows.len() && indices.iter().enumerate().all(|(i, &j)| i == j);
        if identity {
            return Ok(());
        }
        if self.used > 0 {
            let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
            let idx = Tensor::new(idx.as_slice(), &self.device)?;
            for layer in self.suffix.iter_mut() {
                if let Some((k, v)) = layer.as_mut() {
                    *k = k.index_select(&idx, 0)?;
                    *v = v.index_select(&idx, 0)?;
                }
            }
        } else {
            // nothing stored in the suffix: just resize the (empty) buffers lazily
            for layer in self.suffix.iter_mut() {
                *layer = None;
            }
            self.cap = 0;
        }
        self.rows = indices.iter().map(|&i| self.rows[i].clone()).collect();
        Ok(())
    }

    /// Fork a single-row cache into `n` identical rows sharing the row as a prefix.
    pub fn fork(&mut self, n: usize) -> Result<()> {
        if self.rows.len() != 1 {
            return Err(Error::invalid(format!(
                "fork needs a single-row cache (has {} rows); use select to duplicate rows",
                self.rows.len()
            )));
        }
        self.select(&vec![0; n.max(1)])
    }

    /// Move the only row's suffix into the shared prefix (a one-time copy of that row).
    pub fn promote_prefix(&mut self) -> Result<()> {
        if self.rows.len() != 1 {
            return Err(Error::invalid("only a single-row cache can be promoted to a prefix"));
        }
        let row = &self.rows[0];
        let valid: Vec<(i32, usize)> = {
            let mut v: Vec<(i32, usize)> =
                row.slots.iter().enumerate().filter(|(_, &p)| p != EMPTY).map(|(s, &p)| (p, s)).collect();
            v.sort_unstable();
            v
        };
        if valid.is_empty() {
            return Ok(());
        }
        let old_len = self.prefix_len();
        let contiguous = valid.iter().enumerate().all(|(i, &(p, s))| s == i && p as usize == old_len + i);
        let idx = if contiguous {
            None
        } else {
            let idx: Vec<u32> = valid.iter().map(|&(_, s)| s as u32).collect();
            Some(Tensor::new(idx.as_slice(), &self.device)?)
        };
        let n = valid.len();
        let mut ks = Vec::with_capacity(self.shape.n_layers);
        let mut vs = Vec::with_capacity(self.shape.n_layers);
        for (l, layer) in self.suffix.iter().enumerate() {
            let (k, v) = layer.as_ref().ok_or_else(|| Error::invalid("cache layer never written"))?;
            let take = |t: &Tensor| -> Result<Tensor> {
                let t = t.get(0)?; // [h, cap, d]
                let t = match &idx {
                    None => t.narrow(1, 0, n)?,
                    Some(idx) => t.index_select(idx, 1)?,
                };
                Ok(t)
            };
            let (nk, nv) = (take(k)?, take(v)?);
            let (nk, nv) = match &self.prefix {
                Some(p) => (Tensor::cat(&[&p.k[l], &nk], 1)?, Tensor::cat(&[&p.v[l], &nv], 1)?),
                None => (nk.contiguous()?, nv.contiguous()?),
            };
            ks.push(nk);
            vs.push(nv);
        }
        self.prefix = Some(Arc::new(SharedPrefix { k: ks, v: vs, len: old_len + n }));
        self.suffix = vec![None; self.shape.n_layers];
        self.cap = 0;
        self.used = 0;
        self.rows[0] = Row { len: old_len + n, slots: Vec::new() };
        Ok(())
    }

    /// Cut row `r` back to `len` tokens (`prefix_len() <= len <= row_len(r)`).
    pub fn truncate(&mut self, r: usize, len: usize) -> Result<()> {
        let prefix = self.prefix_len();
        let row = self.rows.get_mut(r).ok_or_else(|| Error::invalid(format!("row {r} out of range")))?;
        if len > row.len {
            return Err(Error::invalid(format!("cannot truncate row {r} of length {} to {len}", row.len)));
        }
        if len < prefix {
            return Err(Error::invalid(format!(
                "cannot truncate row {r} to {len}: the first {prefix} tokens are a shared prefix"
            )));
        }
        for p in row.slots.iter_mut() {
            if *p != EMPTY && *p as usize >= len {
                *p = EMPTY;
            }
        }
        row.len = len;
        self.reclaim_tail();
        Ok(())
    }

    /// Cut every row back to `lens` (the lengths before a pass that failed): a failed pass's
    /// reservations are undone so the pass can be rerun.
    pub fn restore_lens(&mut self, lens: &[usize]) {
        for (r, &len) in lens.iter().enumerate() {
            if self.row_len(r).is_ok_and(|now| now > len) {
                let _ = self.truncate(r, len);
            }
        }
    }

    /// Cut every row back by `n` tokens (the usual "undo the lookahead").
    pub fn truncate_all_by(&mut self, n: usize) -> Result<()> {
        for r in 0..self.rows.len() {
            let len = self.rows[r].len.saturating_sub(n);
            self.truncate(r, len)?;
        }
        Ok(())
    }

    /// Drop trailing slots that are empty in every row, so the next step reuses them.
    fn reclaim_tail(&mut self) {
        while self.used > 0 && self.rows.iter().all(|r| r.slots[self.used - 1] == EMPTY) {
            self.used -= 1;
            for r in self.rows.iter_mut() {
                r.slots.pop();
            }
        }
    }

    /// An independent copy: suffix buffers are copied, the shared prefix stays shared.
    pub fn deep_clone(&self) -> Result<Self> {
        let suffix = self
            .suffix
            .iter()
            .map(|l| match l {
                Some((k, v)) => Ok(Some((k.copy()?, v.copy()?))),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            shape: self.shape,
            device: self.device.clone(),
            dtype: self.dtype,
            prefix: self.prefix.clone(),
            suffix,
            cap: self.cap,
            used: self.used,
            rows: self.rows.clone(),
        })
    }

    /// Reserve slots for `new_tokens[r]` tokens per row (padded to the max), record their
    /// positions and build the attention masks. `sliding_window` builds the local mask too.
    pub fn begin_step(&mut self, new_tokens: &[usize], sliding_window: Option<usize>) -> Result<StepInfo> {
        if new_tokens.len() != self.rows.len() {
            return Err(Error::invalid(format!(
                "step has {} rows of input but the cache has {} rows",
                new_tokens.len(),
                self.rows.len()
            )));
        }
        let t = new_tokens.iter().copied().max().unwrap_or(0);
        if t == 0 {
            return Err(Error::invalid("a step needs at least one new token"));
        }
        let offset = self.used;
        self.ensure_capacity(offset + t)?;
        let mut positions = Vec::with_capacity(self.rows.len() * t);
        for (row, &n) in self.rows.iter_mut().zip(new_tokens) {
            for j in 0..t {
                let pos = row.len + j.min(n.saturating_sub(1));
                positions.push(pos as u32);
                row.slots.push(if j < n { (row.len + j) as i32 } else { EMPTY });
            }
            row.len += n;
        }
        self.used += t;
        let prefix = self.prefix_len();
        let keys = prefix + self.used;
        let build = |window: Option<usize>| -> Result<Tensor> {
            let mut m = vec![MASKED; self.rows.len() * t * keys];
            for (r, row) in self.rows.iter().enumerate() {
                for j in 0..t {
                    let qp = positions[r * t + j] as i64;
                    let base = (r * t + j) * keys;
                    let allowed = |kp: i64| kp <= qp && window.is_none_or(|w| qp - kp < w as i64);
                    for c in 0..prefix {
                        if allowed(c as i64) {
                            m[base + c] = 0.0;
                        }
                    }
                    for (s, &kp) in row.slots.iter().enumerate() {
                        if kp != EMPTY && allowed(kp as i64) {
                            m[base + prefix + s] = 0.0;
                        }
                    }
                }
            }
            Ok(Tensor::from_vec(m, (self.rows.len(), 1, 1, t, keys), &self.device)?.to_dtype(self.dtype)?)
        };
        let mask_global = build(None)?;
        let mask_local = match sliding_window {
            Some(w) => Some(build(Some(w))?),
            None => None,
        };
        Ok(StepInfo { positions, mask_global, mask_local, new_tokens: new_tokens.to_vec(), write_offset: offset })
    }

    fn ensure_capacity(&mut self, need: usize) -> Result<()> {
        if need <= self.cap && self.suffix.iter().all(|l| l.is_some()) {
            return Ok(());
        }
        let new_cap = need.max(self.cap * 2).div_ceil(CAP_STEP) * CAP_STEP;
        let dims = (self.rows.len(), self.shape.n_kv_heads, new_cap, self.shape.head_dim);
        for layer in self.suffix.iter_mut() {
            let k = Tensor::zeros(dims, self.dtype, &self.device)?;
            let v = Tensor::zeros(dims, self.dtype, &self.device)?;
            if let Some((ok, ov)) = layer.as_ref() {
                if self.used > 0 {
                    k.slice_set(&ok.narrow(2, 0, self.used)?.contiguous()?, 2, 0)?;
                    v.slice_set(&ov.narrow(2, 0, self.used)?.contiguous()?, 2, 0)?;
                }
            }
            *layer = Some((k, v));
        }
        self.cap = new_cap;
        Ok(())
    }

    /// Write the new keys/values of one layer (`[rows, n_kv_heads, t, head_dim]`) at the
    /// slots reserved by [`KvCache::begin_step`].
    pub fn write_layer(&mut self, layer: usize, step: &StepInfo, k: &Tensor, v: &Tensor) -> Result<()> {
        let (kb, vb) = self
            .suffix
            .get(layer)
            .and_then(|l| l.as_ref())
            .ok_or_else(|| Error::invalid(format!("layer {layer} has no cache buffer")))?;
        kb.slice_set(&k.contiguous()?, 2, step.write_offset)?;
        vb.slice_set(&v.contiguous()?, 2, step.write_offset)?;
        Ok(())
    }

    /// Keys/values of one layer: the shared prefix (`[n_kv_heads, P, d]`, if any) and the
    /// suffix in use (`[rows, n_kv_heads, slots, d]`).
    pub fn layer_kv(&self, layer: usize) -> Result<LayerKv> {
        let prefix = self.prefix.as_ref().map(|p| (p.k[layer].clone(), p.v[layer].clone()));
        let suffix = match self.suffix.get(layer).and_then(|l| l.as_ref()) {
            Some((k, v)) if self.used > 0 => Some((k.narrow(2, 0, self.used)?, v.narrow(2, 0, self.used)?)),
            _ => None,
        };
        Ok(LayerKv { prefix, suffix })
    }
}

impl KvCache {
    /// One layer's storage as it lies: the shared prefix `[n_kv_heads, P, d]` and the whole
    /// suffix buffers `[rows, n_kv_heads, cap, d]` (slots `0..used` in use), for kernels that
    /// read the values directly.
    pub fn layer_storage(&self, layer: usize) -> LayerStorage<'_> {
        LayerStorage {
            prefix: self.prefix.as_ref().map(|p| (&p.k[layer], &p.v[layer])),
            prefix_len: self.prefix_len(),
            suffix: self.suffix.get(layer).and_then(|l| l.as_ref()).filter(|_| self.used > 0).map(|(k, v)| (k, v)),
            cap: self.cap,
            used: self.used,
        }
    }
}

/// See [`KvCache::layer_storage`].
pub struct LayerStorage<'a> {
    /// Shared prefix keys and values.
    pub prefix: Option<(&'a Tensor, &'a Tensor)>,
    /// Prefix length.
    pub prefix_len: usize,
    /// Suffix key and value buffers (when any slot is in use).
    pub suffix: Option<(&'a Tensor, &'a Tensor)>,
    /// Slots allocated per row and head.
    pub cap: usize,
    /// Slots in use.
    pub used: usize,
}

/// One layer's keys and values as seen by attention.
pub struct LayerKv {
    /// Shared prefix keys/values `[n_kv_heads, P, d]`.
    pub prefix: Option<(Tensor, Tensor)>,
    /// Per-row suffix keys/values `[rows, n_kv_heads, slots, d]`.
    pub suffix: Option<(Tensor, Tensor)>,
}
