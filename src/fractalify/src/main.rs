//! The WASI edge of fractalify: argv and environment, the directory scan, files and the log.
//! The pixel arithmetic lives in the library (`lib.rs`).

mod cli;
mod codec;
mod decimal;
mod files;

use std::fs;
use std::path::{Path, PathBuf};
use std::process;
use std::thread;
use std::time::{Duration, Instant};

use cli::{Command, Options};
use codec::Format;
use files::Fingerprint;

/// What happened to one input in one scan.
enum Outcome {
    Written { output: PathBuf, bytes: usize, millis: u128 },
    AlreadyDone,
    ClaimedElsewhere,
    Failed(String),
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let env = |name: &str| std::env::var(name).ok();
    let options = match cli::parse(&args, &env) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            println!("{}\n\n{}", cli::USAGE, cli::HELP);
            return;
        }
        Ok(Command::Version) => {
            println!("fractalify {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Err(message) => usage_error(&message),
    };
    for (label, dir) in [("input", &options.input_dir), ("output", &options.output_dir)] {
        if !dir.is_dir() {
            usage_error(&format!("{} directory {} does not exist or is not a directory (is it mounted?)", label, dir.display()));
        }
    }
    println!(
        "fractalify {}: {} {} -> {} (formats: {}; kernel {}; c={}; max-iter {}; channel {}; instance {})",
        env!("CARGO_PKG_VERSION"),
        if options.once { "processing" } else { "watching" },
        options.input_dir.display(),
        options.output_dir.display(),
        codec::built_formats().join(" "),
        fractalify::KERNEL,
        options.constant,
        options.params.max_iter,
        options.params.channel.name(),
        options.instance,
    );
    let mut worker = Worker { options, failures: Vec::new() };
    if worker.options.once {
        let summary = worker.scan();
        println!(
            "done: {} written, {} already done, {} claimed by another instance, {} failed",
            summary.written, summary.already_done, summary.elsewhere, summary.failed
        );
        if summary.failed > 0 {
            process::exit(1);
        }
        // Success returns normally: no proc_exit(0), which a runtime may count as a failure.
        return;
    }
    loop {
        worker.scan();
        sleep_in_slices(worker.options.interval);
    }
}

/// One line on stderr and exit status 2: a bad option or a missing directory.
fn usage_error(message: &str) -> ! {
    eprintln!("fractalify: {}", message);
    process::exit(2);
}

/// Sleeps in short slices so a host that interrupts the module between slices stops it quickly.
fn sleep_in_slices(total: Duration) {
    let slice = Duration::from_millis(200);
    let deadline = Instant::now() + total;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        thread::sleep(slice.min(deadline - now));
    }
}

#[derive(Default)]
struct Summary {
    written: usize,
    already_done: usize,
    elsewhere: usize,
    failed: usize,
}

struct Worker {
    options: Options,
    /// Inputs that failed, with the fingerprint they had then: reported once while unchanged.
    /// (A list, searched in turn: it is short, and a map's code costs the module kilobytes.)
    failures: Vec<(PathBuf, Fingerprint)>,
}

impl Worker {
    fn scan(&mut self) -> Summary {
        let mut summary = Summary::default();
        let inputs = match files::list_inputs(&self.options.input_dir) {
            Ok(inputs) => inputs,
            Err(e) => {
                eprintln!("fractalify: cannot list {}: {}", self.options.input_dir.display(), e);
                summary.failed += 1;
                return summary;
            }
        };
        for relative in inputs {
            let source = self.options.input_dir.join(&relative);
            let print = files::fingerprint(&source);
            let known_bad = print.is_some() && self.failures.iter().any(|(path, was)| *path == relative && Some(was) == print.as_ref());
            if known_bad && !self.options.once {
                continue;
            }
            match self.process(&relative, &source) {
                Outcome::Written { output, bytes, millis } => {
                    self.failures.retain(|(path, _)| *path != relative);
                    summary.written += 1;
                    println!("wrote {} ({} bytes, {} ms)", output.display(), bytes, millis);
                }
                Outcome::AlreadyDone => summary.already_done += 1,
                Outcome::ClaimedElsewhere => summary.elsewhere += 1,
                Outcome::Failed(reason) => {
                    summary.failed += 1;
                    eprintln!("fractalify: {}: {}", relative.display(), reason);
                    if let Some(print) = print {
                        self.failures.retain(|(path, _)| *path != relative);
                        self.failures.push((relative, print));
                    }
                }
            }
        }
        summary
    }

    fn process(&self, relative: &Path, source: &Path) -> Outcome {
        // The content, not the extension, decides the format and so the output's name.
        let format = match read_header(source).map_err(|e| format!("cannot read: {}", e)).and_then(|h| codec::sniff(&h)) {
            Ok(format) => format,
            Err(reason) => return Outcome::Failed(reason),
        };
        let planned = files::output_relative(relative, format);
        let output = self.options.output_dir.join(&planned);
        if output.exists() {
            return Outcome::AlreadyDone;
        }
        let claim = match files::try_claim(&output, &self.options.instance) {
            Ok(Some(claim)) => claim,
            Ok(None) => return Outcome::ClaimedElsewhere,
            Err(e) => return Outcome::Failed(format!("cannot claim {}: {}", planned.display(), e)),
        };
        // Another instance may have finished it between our check and our claim.
        if output.exists() {
            return Outcome::AlreadyDone;
        }
        let started = Instant::now();
        let result = self.render(source, format).and_then(|bytes| {
            files::write_atomically(&output, &bytes, &self.options.instance)
                .map_err(|e| format!("cannot write {}: {}", planned.display(), e))?;
            Ok(bytes.len())
        });
        drop(claim);
        match result {
            Ok(bytes) => Outcome::Written { output: planned, bytes, millis: started.elapsed().as_millis() },
            Err(reason) => Outcome::Failed(reason),
        }
    }

    /// Reads, decodes, runs the kernel and encodes one input; returns the output bytes.
    fn render(&self, source: &Path, format: Format) -> Result<Vec<u8>, String> {
        let bytes = fs::read(source).map_err(|e| format!("cannot read: {}", e))?;
        if codec::sniff(&bytes)? != format {
            return Err("changed while being read; will retry when it is unchanged".to_string());
        }
        let mut pixels = codec::decode(&bytes, format, self.options.max_pixels)?;
        drop(bytes);
        fractalify::fractalify(&mut pixels.data, pixels.width, pixels.height, pixels.channels, &self.options.params);
        codec::encode(pixels, format)
    }
}

/// The first bytes of a file: enough to recognise every supported format.
fn read_header(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut header = Vec::with_capacity(64);
    fs::File::open(path)?.take(64).read_to_end(&mut header)?;
    Ok(header)
}
