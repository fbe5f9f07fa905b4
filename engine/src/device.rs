//! Choosing the compute device at run time (`cpu`, `cuda`, `cuda:N`).

use candle_core::Device;

use crate::{Error, Result};

/// Parse a device name. `cuda` needs a build with `--features cuda`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.as_str() {
        "cuda" | "gpu" => Some(0),
        s => s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()),
    };
    match ordinal {
        Some(i) => {
            if !cfg!(feature = "cuda") {
                return Err(Error::Device(
                    "this deal was built without CUDA; rebuild with `--features cuda`".into(),
                ));
            }
            Device::new_cuda(i).map_err(|e| {
                let msg = e.to_string();
                Error::Device(format!("cannot open cuda:{i}: {}", msg.lines().next().unwrap_or_default()))
            })
        }
        None => Err(Error::Device(format!("unknown device `{spec}` (expected cpu, cuda or cuda:N)"))),
    }
}

/// A short name for a device, for logs and `deal info`.
pub fn device_name(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}
