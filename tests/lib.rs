//! Shared helpers of the integration tests: where the real data lives, and how to run the
//! `rac` binary that `cargo test --workspace` builds beside the tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rac_core::assets::AssetCache;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// A manifest of `data-manifests/`.
pub fn manifest(name: &str) -> PathBuf {
    workspace_root().join("data-manifests").join(name)
}

/// The team's shared data folder (`../shared/data` beside the checkout), or `RAC_SHARED_DATA`.
pub fn shared_data() -> PathBuf {
    std::env::var_os("RAC_SHARED_DATA").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("..").join("shared").join("data"))
}

/// The real Places365-LT split folder.
pub fn places_split_dir() -> PathBuf {
    let dir = shared_data().join("places365-lt");
    assert!(dir.join("Places_LT_train.txt").is_file(), "the Places365-LT split files are expected in {}", dir.display());
    dir
}

/// The asset cache the test command filled (`$RAC_HOME` or `~/.cache/rac`).
pub fn cache() -> AssetCache {
    AssetCache::from_env()
}

/// The folder of a fetched asset; fails with the fix when it is absent.
pub fn asset(name: &str) -> PathBuf {
    cache().require(name).unwrap_or_else(|e| panic!("{e} (scripts/test.sh fetches every asset before the tests)"))
}

/// The `rac` binary of this build: `target/<profile>/rac`, beside `deps/` where tests run.
pub fn rac_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = dir.join(format!("rac{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} is missing: build it with `cargo build --workspace` first", bin.display());
    bin
}

/// Run `rac` with arguments and return its output.
pub fn rac(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(rac_bin());
    cmd.args(args).current_dir(workspace_root()).env_remove("RAC_SPLIT_DIR").env_remove("RAC_IMAGE_ROOT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("rac runs")
}

/// Stdout of a successful `rac` run; panics with its stderr otherwise.
pub fn rac_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = rac(args, env);
    assert!(out.status.success(), "rac {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A small split-list data set cut from the real Fashion-MNIST-LT: the first `per_class_train`
/// training and `per_class_test` test images of every class, written as PNG files under
/// `dir/img/{train,test}/<class>/` with `train.txt` / `test.txt` and a manifest. Returns
/// the manifest's path. Encoding it takes seconds, where the whole set takes minutes.
pub fn tiny_fashion_set(dir: &Path, per_class_train: usize, per_class_test: usize) -> PathBuf {
    tiny_fashion_set_with_external(dir, per_class_train, per_class_test, 0)
}

/// [`tiny_fashion_set`] with an external split too: the first `per_class_external` images of
/// every class that Fashion-MNIST-LT's profile leaves out, as `external.txt`, named by the
/// manifest's `[external]` section (`from = "file"`) when there are any.
pub fn tiny_fashion_set_with_external(dir: &Path, per_class_train: usize, per_class_test: usize, per_class_external: usize) -> PathBuf {
    use rac_core::data::{DataOverrides, Dataset, Split};
    let ds = Dataset::load(&manifest("fashion-mnist-lt.toml"), &DataOverrides::default(), &cache()).expect("Fashion-MNIST-LT loads");
    let write = |split: &Split, name: &str, per_class: usize| {
        let mut taken = vec![0usize; ds.num_classes()];
        let mut lines = String::new();
        for i in 0..split.len() {
            let c = split.labels[i];
            if taken[c] == per_class {
                continue;
            }
            taken[c] += 1;
            let rel = format!("{name}/class{c}/{}.png", split.item_id(i));
            let path = dir.join("img").join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            split.image(i).unwrap().save(&path).unwrap();
            lines.push_str(&format!("{rel} {c}\n"));
        }
        std::fs::write(dir.join(format!("{name}.txt")), lines).unwrap();
    };
    write(&ds.train, "train", per_class_train);
    write(&ds.test, "test", per_class_test);
    let external = if per_class_external > 0 {
        write(ds.external.as_ref().expect("Fashion-MNIST-LT has an external split"), "external", per_class_external);
        "[external]\nfrom = \"file\"\nfile = { file = \"external.txt\" }\n"
    } else {
        ""
    };
    let path = dir.join("tiny.toml");
    std::fs::write(
        &path,
        format!("name = \"tiny-fashion\"\n[split_list]\nsplit_dir = \".\"\nimage_root = \"img\"\ntrain = {{ file = \"train.txt\" }}\ntest = {{ file = \"test.txt\" }}\n\
         [classes]\ncount = 10\ntext_from = \"path_component\"\npath_component = 1\n{external}[preprocess]\nresize = 224\ncrop = 224\n"),
    )
    .unwrap();
    path
}

/// The `k` nearest items to each query (row-major, `dim` columns), nearest first, ties by
/// id: brute force written out plainly, independent of the library's exact backend.
pub fn brute_force(
    items: &[(rac_core::index::ItemId, &[f32])],
    queries: &[f32],
    dim: usize,
    k: usize,
    metric: rac_core::index::Metric,
) -> Vec<Vec<(rac_core::index::ItemId, f32)>> {
    use rac_core::index::Metric;
    let unit = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    queries
        .chunks(dim)
        .map(|q| {
            let q = if metric == Metric::Cosine { unit(q) } else { q.to_vec() };
            let mut d: Vec<_> = items
                .iter()
                .map(|&(id, x)| {
                    let dist = match metric {
                        Metric::Cosine => 1.0 - unit(x).iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(),
                        Metric::L2 => x.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt(),
                    };
                    (id, dist)
                })
                .collect();
            d.sort_by(|a: &(u32, f32), b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            d.truncate(k);
            d
        })
        .collect()
}
