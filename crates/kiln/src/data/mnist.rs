//! MNIST (LeCun, Cortes, Burges): 60,000 training and 10,000 test images of handwritten
//! digits, 28x28 grey levels, found on disk or (feature `download`) fetched once into a
//! cache. Every file's uncompressed content is checked against a pinned SHA-256, because
//! mirrors differ in their gzip bytes but must not differ in the data.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::checksum::sha256_hex;
use super::gzip::read_maybe_gzip;
use super::idx::parse_header;
use super::{Dataset, Splits};

/// The four files, as (name, SHA-256 of the raw content), in the order train images,
/// train labels, test images, test labels. Each may be stored raw or as `name.gz`.
const FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// Public mirrors of the `.gz` files, tried in order (yann.lecun.com no longer serves them).
const MIRRORS: [&str; 2] = [
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
];

const SIDE: usize = 28;
const CLASSES: u8 = 10;

/// Loads MNIST with raw grey levels 0–255 as features, sample shape [28, 28].
///
/// With `data_dir`, the files must be there (a user who names a folder means that folder).
/// Otherwise kiln looks in `$KILN_DATA/mnist`, then `~/.cache/kiln/mnist`, then downloads
/// into the cache unless built without the `download` feature or `KILN_OFFLINE=1`.
/// `KILN_MNIST_MIRROR` replaces the list of mirrors with one base URL.
pub fn load_mnist(data_dir: Option<&Path>) -> Result<Splits> {
    match data_dir {
        Some(dir) => {
            let paths = find_in(dir).map_err(|why| not_in_given_dir(dir, &why))?;
            load_files(&paths)
        }
        None => load_with_plan(&Plan::from_env()),
    }
}

/// Where to look for MNIST and whether to download it, decided once from the environment
/// and passed in whole, so that tests can exercise every case without touching env vars.
#[derive(Debug)]
struct Plan {
    search: Vec<PathBuf>,
    /// Places not searched and why (e.g. `$KILN_DATA` unset), for the error message.
    notes: Vec<String>,
    download: Download,
}

#[derive(Debug, PartialEq)]
enum Download {
    /// Why not (no feature, offline, no home folder).
    Disabled(String),
    #[cfg_attr(not(feature = "download"), allow(dead_code))]
    Into { dir: PathBuf, mirrors: Vec<String> },
}

impl Plan {
    fn from_env() -> Plan {
        let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE"));
        Plan::new(
            std::env::var_os("KILN_DATA"),
            home,
            std::env::var("KILN_OFFLINE").ok(),
            std::env::var("KILN_MNIST_MIRROR").ok(),
        )
    }

    fn new(
        kiln_data: Option<OsString>,
        home: Option<OsString>,
        offline: Option<String>,
        mirror: Option<String>,
    ) -> Plan {
        let (mut search, mut notes) = (Vec::new(), Vec::new());
        match kiln_data.filter(|d| !d.is_empty()) {
            Some(d) => search.push(PathBuf::from(d).join("mnist")),
            None => notes.push("$KILN_DATA is not set".to_string()),
        }
        let cache = home
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache/kiln/mnist"));
        match &cache {
            Some(c) => search.push(c.clone()),
            None => notes.push("$HOME is not set".to_string()),
        }
        let download = download_policy(cache, offline, mirror);
        Plan {
            search,
            notes,
            download,
        }
    }
}

fn download_policy(cache: Option<PathBuf>, offline: Option<String>, mirror: Option<String>) -> Download {
    if !cfg!(feature = "download") {
        return Download::Disabled(
            "this build of kiln cannot download (it was built without the `download` feature)".to_string(),
        );
    }
    if let Some(v) = offline.filter(|v| !matches!(v.as_str(), "" | "0" | "false")) {
        return Download::Disabled(format!("downloading is disabled by KILN_OFFLINE={v}"));
    }
    let Some(dir) = cache else {
        return Download::Disabled(
            "$HOME is not set, so there is no cache folder to download into".to_string(),
        );
    };
    let mirrors = match mirror.filter(|m| !m.trim().is_empty()) {
        Some(m) => vec![m.trim().to_string()],
        None => MIRRORS.iter().map(|m| m.to_string()).collect(),
    };
    Download::Into { dir, mirrors }
}

/// The first searched folder holding all four files is loaded (a corrupt file there is an
/// error, not a reason to look further); failing that, a download into the cache.
fn load_with_plan(plan: &Plan) -> Result<Splits> {
    let mut searched = Vec::new();
    for dir in &plan.search {
        match find_in(dir) {
            Ok(paths) => return load_files(&paths),
            Err(why) => searched.push(format!("{} ({why})", dir.display())),
        }
    }
    let failure = match &plan.download {
        Download::Disabled(why) => why.clone(),
        Download::Into { dir, mirrors } => match download_missing(dir, mirrors) {
            Ok(paths) => return load_files(&paths),
            Err(why) => format!("the download failed: {why}"),
        },
    };
    Err(unavailable(&searched, &plan.notes, &failure))
}

/// The path of each of the four files in `dir` (raw preferred to `.gz`), or what is missing.
fn find_in(dir: &Path) -> std::result::Result<[PathBuf; 4], String> {
    if !dir.is_dir() {
        return Err("no such folder".to_string());
    }
    let found: Vec<Option<PathBuf>> = FILES.iter().map(|(name, _)| present(dir, name)).collect();
    let missing: Vec<&str> = FILES
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|((name, _), _)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing {}", missing.join(", ")));
    }
    let paths: Vec<PathBuf> = found.into_iter().flatten().collect();
    Ok(paths.try_into().expect("four files found"))
}

fn present(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

const HOW_TO_FIX: &str = "Put the four MNIST files (train-images-idx3-ubyte, train-labels-idx1-ubyte, \
     t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; raw or .gz)";

fn not_in_given_dir(dir: &Path, why: &str) -> Error {
    Error::DataUnavailable(format!(
        "MNIST not found in the data folder {} ({why}). {HOW_TO_FIX} in that folder, or leave \
         out --data-dir to use $KILN_DATA/mnist, ~/.cache/kiln/mnist or a download.",
        dir.display()
    ))
}

fn unavailable(searched: &[String], notes: &[String], failure: &str) -> Error {
    let mut places = if searched.is_empty() {
        "nowhere".to_string()
    } else {
        searched.join("; ")
    };
    if !notes.is_empty() {
        places.push_str(&format!("; not searched: {}", notes.join(", ")));
    }
    Error::DataUnavailable(format!(
        "MNIST is not available. Searched: {places}. Could not download it: {failure}. \
         {HOW_TO_FIX} in $KILN_DATA/mnist or ~/.cache/kiln/mnist, or pass --data-dir DIR."
    ))
}

#[cfg(feature = "download")]
fn download_missing(dir: &Path, mirrors: &[String]) -> std::result::Result<[PathBuf; 4], String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, sha256) in FILES {
        if present(dir, name).is_some() {
            continue;
        }
        let file = format!("{name}.gz");
        let verify = |part: &Path| read_verified(part, name, sha256).map(|_| ());
        super::fetch::download_first(mirrors, &file, &dir.join(&file), verify)?;
    }
    find_in(dir)
}

#[cfg(not(feature = "download"))]
fn download_missing(_dir: &Path, _mirrors: &[String]) -> std::result::Result<[PathBuf; 4], String> {
    Err("this build of kiln cannot download (it was built without the `download` feature)".to_string())
}

/// The raw content of a file and its SHA-256, which must be the pinned one.
fn read_verified(path: &Path, name: &str, expected: &str) -> Result<(Vec<u8>, String)> {
    let raw = read_maybe_gzip(path)?;
    let actual = sha256_hex(&raw);
    if actual != expected {
        return Err(Error::data(
            path,
            format!(
                "SHA-256 of the uncompressed content is {actual}, expected {expected} for {name}: \
                 the file is corrupt or is not the MNIST {name}; delete it and fetch it again"
            ),
        ));
    }
    Ok((raw, actual))
}

fn load_files(paths: &[PathBuf; 4]) -> Result<Splits> {
    // Train and test are independent: decompress and hash them at the same time.
    let (train, test) = rayon::join(|| load_part(paths, 0), || load_part(paths, 2));
    let ((train, sha256), (test, _)) = (train?, test?);
    // File names, not the folder: a model file records no local path (its lineage keeps
    // the data's SHA-256).
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
        .collect();
    let description = format!(
        "MNIST ({}): {} training and {} test images, 28x28 grey levels 0-255",
        names.join(", "),
        train.len(),
        test.len()
    );
    Ok(Splits {
        train,
        test,
        sha256,
        description,
        schema: None,
        first_missing: None,
    })
}

/// One split from its images file `paths[at]` and labels file `paths[at + 1]`; returns
/// it with the images' SHA-256.
fn load_part(paths: &[PathBuf; 4], at: usize) -> Result<(Dataset, String)> {
    let (images_path, labels_path) = (&paths[at], &paths[at + 1]);
    let (images, sha256) = read_verified(images_path, FILES[at].0, FILES[at].1)?;
    let (labels, _) = read_verified(labels_path, FILES[at + 1].0, FILES[at + 1].1)?;
    let (dims, offset) = parse_header(&images, images_path)?;
    if dims.len() != 3 || dims[1..] != [SIDE, SIDE] {
        return Err(Error::data(
            images_path,
            format!("expected images of shape [n, 28, 28], found {dims:?}"),
        ));
    }
    let labels = parse_labels(&labels, labels_path, dims[0])?;
    // A plain loop over bytes: the compiler vectorises it, 47M values in a few milliseconds.
    let features: Vec<f32> = images[offset..].iter().map(|&b| f32::from(b)).collect();
    let part = Dataset::new(features, vec![SIDE, SIDE], labels)?;
    Ok((part, sha256))
}

fn parse_labels(bytes: &[u8], path: &Path, n_images: usize) -> Result<Vec<u32>> {
    let (dims, offset) = parse_header(bytes, path)?;
    if dims.len() != 1 {
        return Err(Error::data(
            path,
            format!("expected a 1-d array of labels, found shape {dims:?}"),
        ));
    }
    if dims[0] != n_images {
        return Err(Error::data(
            path,
            format!("has {} labels but the images file has {n_images} images", dims[0]),
        ));
    }
    let labels = &bytes[offset..];
    if let Some(i) = labels.iter().position(|&l| l >= CLASSES) {
        return Err(Error::data(
            path,
            format!("label {} at index {i} is not a digit 0-9", labels[i]),
        ));
    }
    Ok(labels.iter().map(|&l| u32::from(l)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::{gzip, shared_data, TempDir};

    fn disabled(search: Vec<PathBuf>, why: &str) -> Plan {
        Plan {
            search,
            notes: vec![],
            download: Download::Disabled(why.to_string()),
        }
    }

    #[test]
    #[ignore = "needs MNIST in $KILN_DATA (../shared/data); .ci/run runs it"]
    fn loads_the_shared_copy_with_known_counts_labels_and_hashes() {
        let data = shared_data();
        let splits = load_mnist(Some(&data.join("mnist"))).unwrap();
        assert_eq!((splits.train.len(), splits.test.len()), (60_000, 10_000));
        assert_eq!((splits.train.labels[0], splits.test.labels[0]), (5, 7));
        assert_eq!(splits.train.sample_shape, vec![28, 28]);
        assert_eq!(splits.sha256, FILES[0].1);
        assert_eq!(splits.train.num_classes(), 10);
        // Raw grey levels, not scaled: the first training image (a 5) has full-black pixels.
        let max = splits.train.sample(0).iter().fold(0.0f32, |m, &v| m.max(v));
        assert_eq!(max, 255.0);
        // Found through the search list too, after an empty folder.
        let empty = TempDir::new("mnist-empty");
        let plan = disabled(vec![empty.path().into(), data.join("mnist")], "offline");
        assert_eq!(load_with_plan(&plan).unwrap().test.labels[..3], [7, 2, 1]);
    }

    #[test]
    #[ignore = "needs MNIST in $KILN_DATA (../shared/data); .ci/run runs it"]
    fn a_corrupted_copy_is_rejected_naming_the_file_and_both_hashes() {
        let data = shared_data();
        let dir = TempDir::new("mnist-corrupt");
        for (name, _) in FILES {
            let gz = format!("{name}.gz");
            std::fs::copy(data.join("mnist").join(&gz), dir.path().join(&gz)).unwrap();
        }
        // Relabel the first test image: still a well-formed IDX file, but not MNIST.
        let labels = dir.path().join("t10k-labels-idx1-ubyte.gz");
        let mut raw = read_maybe_gzip(&labels).unwrap();
        raw[8] = 3;
        std::fs::remove_file(&labels).unwrap();
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), &raw).unwrap();
        let text = load_mnist(Some(dir.path())).unwrap_err().to_string();
        assert!(text.contains("t10k-labels-idx1-ubyte"), "{text}");
        assert!(
            text.contains(FILES[3].1) && text.contains(&sha256_hex(&raw)),
            "{text}"
        );
    }

    #[test]
    fn a_named_folder_without_the_files_is_an_error_naming_it() {
        let dir = TempDir::new("mnist-given");
        std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), gzip(b"x")).unwrap();
        let err = load_mnist(Some(dir.path())).unwrap_err();
        assert!(matches!(err, Error::DataUnavailable(_)));
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(
            text.contains("missing train-labels-idx1-ubyte, t10k-images"),
            "{text}"
        );
    }

    #[test]
    fn offline_with_nothing_found_says_where_it_looked_and_what_to_do() {
        let dir = TempDir::new("mnist-offline");
        let plan = Plan {
            notes: vec!["$KILN_DATA is not set".into()],
            ..disabled(
                vec![dir.path().into()],
                "downloading is disabled by KILN_OFFLINE=1",
            )
        };
        let err = load_with_plan(&plan).unwrap_err();
        assert!(matches!(err, Error::DataUnavailable(_)));
        let text = err.to_string();
        for part in [
            &dir.path().display().to_string(),
            "missing train-images",
            "$KILN_DATA is not set",
            "KILN_OFFLINE=1",
            "--data-dir",
            "~/.cache/kiln/mnist",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
    }

    #[test]
    fn the_plan_follows_the_environment_values() {
        let plan = Plan::new(Some("/d".into()), Some("/h".into()), None, None);
        assert_eq!(
            plan.search,
            vec![PathBuf::from("/d/mnist"), PathBuf::from("/h/.cache/kiln/mnist")]
        );
        let plan = Plan::new(None, None, None, None);
        assert!(plan.search.is_empty() && plan.notes.len() == 2);
        assert!(matches!(plan.download, Download::Disabled(_)));
        let offline = Plan::new(None, Some("/h".into()), Some("1".into()), None).download;
        let Download::Disabled(why) = offline else {
            panic!("offline must not download")
        };
        if cfg!(feature = "download") {
            assert!(why.contains("KILN_OFFLINE=1"), "{why}");
            let mirror = Some("http://m/".to_string());
            let online = Plan::new(None, Some("/h".into()), Some("0".into()), mirror).download;
            let expected = Download::Into {
                dir: "/h/.cache/kiln/mnist".into(),
                mirrors: vec!["http://m/".into()],
            };
            assert_eq!(online, expected);
        } else {
            assert!(why.contains("`download` feature"), "{why}");
        }
    }

    #[cfg(feature = "download")]
    mod download {
        use super::*;
        use std::collections::HashMap;
        use std::io::{BufRead, BufReader, Write};
        use std::net::TcpListener;

        /// A minimal HTTP server for `files` (name → body) on a free local port; returns its base URL.
        fn serve(files: HashMap<String, Vec<u8>>) -> String {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let base = format!("http://{}/", listener.local_addr().unwrap());
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let mut reader = BufReader::new(&stream);
                    let mut request = String::new();
                    reader.read_line(&mut request).unwrap_or(0);
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    let path = request.split(' ').nth(1).unwrap_or("/").trim_start_matches('/');
                    let mut out = &stream;
                    let _ = match files.get(path) {
                        Some(body) => write!(
                            out,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .and_then(|_| out.write_all(body)),
                        None => write!(
                            out,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        ),
                    };
                }
            });
            base
        }

        fn entries(dir: &Path) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }

        #[test]
        fn a_refused_connection_is_reported_with_the_places_searched() {
            let (empty, cache) = (TempDir::new("mnist-dl-empty"), TempDir::new("mnist-dl-cache"));
            let plan = Plan {
                search: vec![empty.path().into()],
                notes: vec![],
                download: Download::Into {
                    dir: cache.path().into(),
                    mirrors: vec!["http://127.0.0.1:9/".into()],
                },
            };
            let text = load_with_plan(&plan).unwrap_err().to_string();
            assert!(
                text.contains("the download failed: http://127.0.0.1:9/train-images-idx3-ubyte.gz"),
                "{text}"
            );
            assert!(
                text.contains(&empty.path().display().to_string()) && text.contains("--data-dir"),
                "{text}"
            );
            assert!(entries(cache.path()).is_empty(), "no partial files left behind");
        }

        #[test]
        fn a_download_with_the_wrong_content_is_deleted_and_reported() {
            let files: HashMap<String, Vec<u8>> = FILES
                .iter()
                .map(|(n, _)| (format!("{n}.gz"), gzip(b"not mnist")))
                .collect();
            let cache = TempDir::new("mnist-dl-bad");
            let plan = Plan {
                search: vec![],
                notes: vec![],
                download: Download::Into {
                    dir: cache.path().into(),
                    mirrors: vec![serve(files)],
                },
            };
            let text = load_with_plan(&plan).unwrap_err().to_string();
            assert!(
                text.contains(FILES[0].1) && text.contains(&sha256_hex(b"not mnist")),
                "{text}"
            );
            assert!(entries(cache.path()).is_empty(), "the bad download was deleted");
        }

        #[test]
        #[ignore = "needs MNIST in $KILN_DATA (../shared/data); .ci/run runs it"]
        fn downloads_from_the_next_mirror_when_one_fails_then_loads() {
            let data = shared_data();
            let files: HashMap<String, Vec<u8>> = FILES
                .iter()
                .map(|(n, _)| {
                    (
                        format!("{n}.gz"),
                        std::fs::read(data.join("mnist").join(format!("{n}.gz"))).unwrap(),
                    )
                })
                .collect();
            let cache = TempDir::new("mnist-dl-good");
            let mirrors = vec!["http://127.0.0.1:9/".to_string(), serve(files)];
            let plan = Plan {
                search: vec![],
                notes: vec![],
                download: Download::Into {
                    dir: cache.path().into(),
                    mirrors,
                },
            };
            let splits = load_with_plan(&plan).unwrap();
            assert_eq!((splits.train.len(), splits.test.labels[0]), (60_000, 7));
            let expected: Vec<String> = {
                let mut v: Vec<String> = FILES.iter().map(|(n, _)| format!("{n}.gz")).collect();
                v.sort();
                v
            };
            assert_eq!(entries(cache.path()), expected);
        }
    }
}
