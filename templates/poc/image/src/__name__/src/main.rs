//! The WASI edge: `NAME [--once] [--interval SECONDS] INPUT_DIR OUTPUT_DIR`, the argv a Krustlet
//! Pod gives (`args: ["NAME", "/input_dir", "/output_dir"]`). Each image under INPUT_DIR (by its
//! extension, see `poc::EXTENSIONS`) is written changed, in its own format, at the same relative
//! path under OUTPUT_DIR: once, after an exclusive claim (`.<name>.claim`, so replicas sharing the
//! output never write one image twice), through a temporary file renamed into place. Options also
//! come from `<NAME>_ONCE` and `<NAME>_INTERVAL` (upper case, '-' as '_'); a flag beats its variable.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process;
use std::thread;
use std::time::Duration;

struct Options {
    once: bool,
    interval: Duration,
    input: PathBuf,
    output: PathBuf,
}

fn usage_error(message: &str) -> ! {
    eprintln!("{}: {}", env!("CARGO_PKG_NAME"), message);
    process::exit(2);
}

fn variable(suffix: &str) -> Option<String> {
    let name = format!("{}_{}", env!("CARGO_PKG_NAME").to_uppercase().replace('-', "_"), suffix);
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_options() -> Options {
    let mut once = variable("ONCE").map(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let mut interval = variable("INTERVAL");
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--once" => once = Some(true),
            "--interval" => interval = Some(args.next().unwrap_or_else(|| usage_error("--interval needs a value"))),
            other if other.starts_with("--") => usage_error(&format!("unknown option {}", other)),
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    if positional.len() != 2 {
        usage_error("usage: [--once] [--interval SECONDS] INPUT_DIR OUTPUT_DIR");
    }
    let seconds: f64 = interval.as_deref().unwrap_or("5").parse().unwrap_or_else(|_| usage_error("--interval must be a number of seconds"));
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        usage_error("--interval must be more than 0 and at most 86400");
    }
    let output = positional.pop().unwrap();
    let input = positional.pop().unwrap();
    for dir in [&input, &output] {
        if !dir.is_dir() {
            usage_error(&format!("{} is not a directory (is it mounted?)", dir.display()));
        }
    }
    Options { once: once.unwrap_or(false), interval: Duration::from_secs_f64(seconds), input, output }
}

fn list_files(root: &Path, relative: &Path, found: &mut Vec<PathBuf>) {
    let entries = match fs::read_dir(root.join(relative)) {
        Ok(entries) => entries,
        Err(_) => return,
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let rel = relative.join(&name);
        match fs::metadata(root.join(&rel)) {
            Ok(m) if m.is_dir() => list_files(root, &rel, found),
            Ok(m) if m.is_file() => found.push(rel),
            _ => {}
        }
    }
}

fn is_image(path: &Path) -> bool {
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    poc::EXTENSIONS.contains(&extension.as_str())
}

/// A hidden name beside `output`: `.<name>.<suffix>`.
fn beside(output: &Path, suffix: &str) -> PathBuf {
    let name = output.file_name().unwrap().to_string_lossy().into_owned();
    output.with_file_name(format!(".{}.{}", name, suffix))
}

/// Claims `output`, writes the changed image through a temporary file, renames it into place.
/// Ok(false): another instance holds the claim, or the output is there.
fn process_one(input: &Path, output: &Path) -> Result<bool, String> {
    if let Some(parent) = output.parent() {
        fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let claim = beside(output, "claim");
    match fs::OpenOptions::new().write(true).create_new(true).open(&claim) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(format!("cannot claim: {}", e)),
    }
    let result = (|| {
        if output.exists() {
            return Ok(false); // written by another instance between our look and our claim
        }
        let data = fs::read(input).map_err(|e| e.to_string())?;
        let changed = poc::process(&data)?;
        let temp = beside(output, "tmp");
        fs::File::create(&temp).and_then(|mut f| f.write_all(&changed)).map_err(|e| e.to_string())?;
        fs::rename(&temp, output).map_err(|e| e.to_string())?;
        Ok(true)
    })();
    let _ = fs::remove_file(&claim);
    result
}

/// Size and modification time: an image that failed is reported again only once it changed.
type Seen = (u64, Option<std::time::SystemTime>);

fn seen(path: &Path) -> Seen {
    fs::metadata(path).map(|m| (m.len(), m.modified().ok())).unwrap_or((0, None))
}

/// One pass over the input; returns how many images failed. `reported` holds the failures
/// already reported, so a watcher names a bad file once, not on every scan.
fn scan(options: &Options, reported: &mut HashMap<PathBuf, Seen>) -> usize {
    let mut inputs = Vec::new();
    list_files(&options.input, Path::new(""), &mut inputs);
    inputs.sort();
    let mut failed = 0;
    for rel in inputs.into_iter().filter(|rel| is_image(rel)) {
        let output = options.output.join(&rel);
        if output.exists() {
            continue;
        }
        let input = options.input.join(&rel);
        let now = seen(&input);
        if reported.get(&rel) == Some(&now) {
            failed += 1;
            continue;
        }
        match process_one(&input, &output) {
            Ok(true) => println!("wrote {}", rel.display()),
            Ok(false) => {}
            Err(e) => {
                eprintln!("{}: {}: {}", env!("CARGO_PKG_NAME"), rel.display(), e);
                reported.insert(rel, now);
                failed += 1;
            }
        }
    }
    failed
}

fn main() {
    let options = parse_options();
    println!("{} {}: {} -> {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), options.input.display(), options.output.display());
    let mut reported = HashMap::new();
    loop {
        let failed = scan(&options, &mut reported);
        if options.once {
            if failed > 0 {
                process::exit(1);
            }
            return; // no proc_exit(0): Krustlet may count any exit call as a failure
        }
        thread::sleep(options.interval);
    }
}
