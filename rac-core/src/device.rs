//! Where tensors live: the `device` setting of an experiment (`auto`, `cpu`, `cuda:N`),
//! and what this build and this machine offer (`rac doctor`).
//!
//! CUDA comes with the `cuda` cargo feature (candle's CUDA backend; see the README's
//! "Building with CUDA"). A build without it runs everywhere on the CPU, and a setting
//! that asks for a GPU fails with an error that says the feature is missing, instead of
//! silently training on the CPU. The retrieval index always stays on the CPU, as in the
//! paper; the setting places the model, its inputs and the loss.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The device asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA device when the build has CUDA and a device answers, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}` is not a device: use `auto`, `cpu`, `cuda` or `cuda:N` (N = 0, 1, ...)");
        match s.trim() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            t => match t.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceChoice::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl DeviceChoice {
    /// Whether this is `auto`.
    pub fn is_auto(&self) -> bool {
        *self == DeviceChoice::Auto
    }

    /// The candle device; `field` names the setting in errors (`train.device`).
    pub fn resolve(&self, field: &str) -> Result<Device> {
        match *self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(if cuda_compiled() { Device::new_cuda(0).unwrap_or(Device::Cpu) } else { Device::Cpu }),
            DeviceChoice::Cuda(n) => {
                if !cuda_compiled() {
                    return Err(Error::Setting {
                        field: field.to_string(),
                        message: format!(
                            "\"cuda:{n}\": CUDA was asked for but this build of rac has no CUDA; \
                             rebuild with `--features cuda` (README: Building with CUDA), or set {field} = \"cpu\""
                        ),
                    });
                }
                Device::new_cuda(n).map_err(|e| Error::Setting {
                    field: field.to_string(),
                    message: format!("\"cuda:{n}\": the CUDA device cannot be opened ({e}); `rac doctor` lists the devices there are"),
                })
            }
        }
    }
}

/// The SIMD level pulp dispatches this CPU's f32 kernels to (`V3`: AVX2 and FMA, `V4`:
/// AVX-512, `Scalar`).
pub fn simd_level() -> String {
    let arch = format!("{:?}", pulp::Arch::new());
    arch.split('(').next().unwrap_or(&arch).to_string()
}

/// The CPU features the numeric kernels dispatch on (gemm's matrix products, pulp's
/// distances): two machines whose lists differ may round differently in the last digit,
/// while one machine always agrees with itself, bit for bit.
pub fn cpu_kernels() -> String {
    #[cfg(target_arch = "x86_64")]
    let features: Vec<&str> = [
        ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
        ("f16c", std::arch::is_x86_feature_detected!("f16c")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    #[cfg(not(target_arch = "x86_64"))]
    let features: Vec<&str> = Vec::new();
    let listed = if features.is_empty() { "no AVX".to_string() } else { features.join(" ") };
    format!("{} {listed}, pulp {}", std::env::consts::ARCH, simd_level())
}

/// Whether this build has the `cuda` feature.
pub fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

/// One CUDA device, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CudaDeviceInfo {
    /// The ordinal (`cuda:N`).
    pub ordinal: usize,
    /// The product name.
    pub name: String,
    /// The compute capability, such as `9.0`.
    pub compute_capability: String,
    /// Memory in GiB.
    pub memory_gib: f64,
}

/// What this build and this machine offer, for `rac doctor`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReport {
    /// Whether the build has the `cuda` feature.
    pub cuda_compiled: bool,
    /// The driver's CUDA version, such as `13.0`.
    pub driver_version: Option<String>,
    /// The runtime libraries' versions (NVRTC and cuBLAS), as loaded.
    pub runtime_versions: Vec<(String, String)>,
    /// CUDA devices found.
    pub cuda_devices: Vec<CudaDeviceInfo>,
    /// Why CUDA could not be queried, when it could not.
    pub cuda_error: Option<String>,
    /// What `device = "auto"` picks here.
    pub auto_picks: String,
}

impl DeviceReport {
    /// Query the build and the driver.
    pub fn probe() -> Self {
        let auto_picks = match DeviceChoice::Auto.resolve("device") {
            Ok(Device::Cpu) | Err(_) => "cpu".to_string(),
            Ok(d) => format!("{:?}", d.location()),
        };
        let mut report = DeviceReport {
            cuda_compiled: cuda_compiled(),
            driver_version: None,
            runtime_versions: Vec::new(),
            cuda_devices: Vec::new(),
            cuda_error: None,
            auto_picks,
        };
        cuda_probe(&mut report);
        report
    }
}

impl fmt::Display for DeviceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "devices:")?;
        writeln!(f, "  cpu: {} threads, kernels {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), cpu_kernels())?;
        for d in &self.cuda_devices {
            writeln!(f, "  cuda:{}: {}, compute capability {}, {:.1} GiB", d.ordinal, d.name, d.compute_capability, d.memory_gib)?;
        }
        if self.cuda_compiled {
            writeln!(f, "cuda feature: compiled in")?;
            writeln!(f, "cuda driver: {}", self.driver_version.as_deref().unwrap_or("not found"))?;
            for (lib, v) in &self.runtime_versions {
                writeln!(f, "cuda runtime: {lib} {v}")?;
            }
        } else {
            writeln!(f, "cuda feature: not compiled in (rebuild with `--features cuda` to use a GPU)")?;
        }
        if let Some(e) = &self.cuda_error {
            writeln!(f, "cuda error: {e}")?;
        }
        write!(f, "device = \"auto\" picks: {}", self.auto_picks)
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_probe(_: &mut DeviceReport) {}

#[cfg(feature = "cuda")]
fn cuda_probe(report: &mut DeviceReport) {
    use candle_core::cuda_backend::cudarc;
    use cudarc::driver::{CudaContext, sys};

    let version = |v: i32| format!("{}.{}", v / 1000, (v % 1000) / 10);
    let mut v = 0i32;
    // SAFETY: the driver writes one int.
    if unsafe { sys::cuDriverGetVersion(&mut v) } == sys::CUresult::CUDA_SUCCESS {
        report.driver_version = Some(version(v));
    }
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: NVRTC writes two ints.
    if unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) } == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        report.runtime_versions.push(("NVRTC".into(), format!("{major}.{minor}")));
    }
    {
        use cudarc::cublas::sys::{cublasGetProperty, cublasStatus_t, libraryPropertyType};
        let mut parts = [0i32; 3];
        let kinds = [libraryPropertyType::MAJOR_VERSION, libraryPropertyType::MINOR_VERSION, libraryPropertyType::PATCH_LEVEL];
        // SAFETY: cuBLAS writes one int per call.
        if kinds.iter().zip(parts.iter_mut()).all(|(k, p)| unsafe { cublasGetProperty(*k, p) } == cublasStatus_t::CUBLAS_STATUS_SUCCESS) {
            report.runtime_versions.push(("cuBLAS".into(), format!("{}.{}.{}", parts[0], parts[1], parts[2])));
        }
    }
    let count = match CudaContext::device_count() {
        Ok(n) => n.max(0) as usize,
        Err(e) => {
            report.cuda_error = Some(format!("no CUDA device answered: {e}"));
            return;
        }
    };
    for ordinal in 0..count {
        match CudaContext::new(ordinal) {
            Ok(ctx) => {
                let (maj, min) = ctx.compute_capability().unwrap_or((0, 0));
                report.cuda_devices.push(CudaDeviceInfo {
                    ordinal,
                    name: ctx.name().unwrap_or_else(|e| format!("(name unknown: {e})")),
                    compute_capability: format!("{maj}.{min}"),
                    memory_gib: ctx.total_mem().map(|b| b as f64 / (1u64 << 30) as f64).unwrap_or(0.0),
                });
            }
            Err(e) => report.cuda_error = Some(format!("cuda:{ordinal} cannot be opened: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for (s, d) in [("auto", DeviceChoice::Auto), ("cpu", DeviceChoice::Cpu), ("cuda:0", DeviceChoice::Cuda(0)), ("cuda:3", DeviceChoice::Cuda(3))]
        {
            assert_eq!(s.parse::<DeviceChoice>().unwrap(), d);
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        for bad in ["gpu:1", "cuda:", "cuda:x", "CPU", "tpu", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains("is not a device"), "{bad}: {e}");
        }
    }
}
