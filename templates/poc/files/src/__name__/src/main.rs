//! The WASI edge: `NAME [--once] [--interval SECONDS] INPUT_DIR OUTPUT_DIR`, the argv a Krustlet
//! Pod gives (`args: ["NAME", "/input_dir", "/output_dir"]`). Each file under INPUT_DIR gets a
//! result `<relative path>.txt` under OUTPUT_DIR, written atomically, once. Options also come
//! from `<NAME>_ONCE` and `<NAME>_INTERVAL` (upper case, '-' as '_'); a flag beats its variable.

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

/// One pass over the input; returns how many files failed.
fn scan(options: &Options) -> usize {
    let mut inputs = Vec::new();
    list_files(&options.input, Path::new(""), &mut inputs);
    inputs.sort();
    let mut failed = 0;
    for rel in inputs {
        let mut name = rel.as_os_str().to_owned();
        name.push(".txt");
        let output = options.output.join(&name);
        if output.exists() {
            continue;
        }
        let result = fs::read(options.input.join(&rel)).and_then(|data| {
            if let Some(parent) = output.parent() {
                fs::create_dir_all(parent)?;
            }
            let file_name = output.file_name().unwrap().to_string_lossy().into_owned();
            let temp = output.with_file_name(format!(".{}.tmp", file_name));
            fs::File::create(&temp)?.write_all(poc::summarize(&data).as_bytes())?;
            fs::rename(&temp, &output)
        });
        match result {
            Ok(()) => println!("wrote {}", PathBuf::from(name).display()),
            Err(e) => {
                eprintln!("{}: {}: {}", env!("CARGO_PKG_NAME"), rel.display(), e);
                failed += 1;
            }
        }
    }
    failed
}

fn main() {
    let options = parse_options();
    println!("{} {}: {} -> {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), options.input.display(), options.output.display());
    loop {
        let failed = scan(&options);
        if options.once {
            if failed > 0 {
                process::exit(1);
            }
            return; // no proc_exit(0): Krustlet may count any exit call as a failure
        }
        thread::sleep(options.interval);
    }
}
