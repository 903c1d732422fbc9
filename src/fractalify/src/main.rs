//! The WASI edge of fractalify: argv and environment, the directory scan, files and the log.
//! The pixel arithmetic lives in the library (`lib.rs`).

mod cli;
mod codec;
mod decimal;
mod files;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process;
use std::thread;
use std::time::{Duration, Instant};

use cli::{Command, Options};
use codec::Format;
use files::{shown, Fingerprint};

/// Exit status of a watcher whose output directory was removed under it: nothing can be written
/// through the old directory again, so it ends for its runtime to restart it on the new one.
const OUTPUT_REMOVED: i32 = 75;

/// A file seen changing is looked at again this soon (or after the interval, when shorter), so a
/// new image waits about a second to be taken as complete, not a whole interval.
const SETTLE: Duration = Duration::from_secs(1);

/// Fingerprints by relative path, in a vector kept sorted (a map type's code would cost the
/// module kilobytes; the listing arrives sorted, so inserts are appends).
#[derive(Default)]
struct Prints(Vec<(PathBuf, Fingerprint)>);

impl Prints {
    fn get(&self, path: &Path) -> Option<&Fingerprint> {
        self.0.binary_search_by(|(p, _)| p.as_path().cmp(path)).ok().map(|at| &self.0[at].1)
    }

    fn insert(&mut self, path: PathBuf, print: Fingerprint) {
        match self.0.binary_search_by(|(p, _)| p.cmp(&path)) {
            Ok(at) => self.0[at].1 = print,
            Err(at) => self.0.insert(at, (path, print)),
        }
    }

    fn remove(&mut self, path: &Path) {
        if let Ok(at) = self.0.binary_search_by(|(p, _)| p.as_path().cmp(path)) {
            self.0.remove(at);
        }
    }
}

/// Why one input was not written.
enum Failure {
    /// Its content: not an image, truncated, over a limit. Remembered by the input's fingerprint
    /// and reported once while the file is unchanged.
    Input(String),
    /// Its surroundings: no space, a read-only or missing output, an unreadable input. Reported
    /// once per cause and retried on every scan until the cause goes away.
    Environment { cause: String, message: String },
}

impl Failure {
    fn io(what: &str, relative: &Path, error: &io::Error) -> Failure {
        let cause = files::cause(error);
        let message = format!("cannot {} {}: {}", what, shown(relative), cause);
        if files::is_name_fault(error) {
            Failure::Input(message)
        } else {
            Failure::Environment { cause, message }
        }
    }
}

/// What happened to one input in one scan.
enum Outcome {
    Written { output: PathBuf, bytes: usize, millis: u128, frames: u32 },
    AlreadyDone,
    ClaimedElsewhere,
    /// Gone, or changed since the last scan (still being copied): looked at again later.
    NotReady,
    Failed(Failure),
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
            usage_error(&format!("{} directory {} does not exist or is not a directory (is it mounted?)", label, shown(dir)));
        }
    }
    if options.instance_given {
        let taken = files::take_back_leftovers(&options.output_dir, &options.instance);
        if taken > 0 {
            eprintln!("fractalify: instance {} took back {} claim(s) and temporary file(s) an earlier run of it left", options.instance, taken);
        }
    }
    println!(
        "fractalify {}: {} {} -> {} (formats: {}; kernel {}; c={}; max-iter {}; channel {}; instance {})",
        env!("CARGO_PKG_VERSION"),
        if options.once { "processing" } else { "watching" },
        shown(&options.input_dir),
        shown(&options.output_dir),
        codec::built_formats().join(" "),
        fractalify::KERNEL,
        options.constant,
        options.params.max_iter,
        options.params.channel.name(),
        options.instance,
    );
    let mut worker = Worker::new(options);
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
        let summary = worker.scan();
        let pause = if summary.not_ready > 0 { worker.options.interval.min(SETTLE) } else { worker.options.interval };
        sleep_in_slices(pause);
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
    not_ready: usize,
    failed: usize,
}

struct Worker {
    options: Options,
    /// Inputs whose content failed, with the fingerprint they had then: reported once while unchanged.
    failures: Prints,
    /// Every input's fingerprint at the previous scan: in watch mode an input is taken only once
    /// it is unchanged since then (a file still being copied is not).
    seen: Prints,
    /// Causes of environment failures already reported and not yet cleared.
    causes: Vec<String>,
    /// Links and unlistable directories already reported.
    reported: Vec<PathBuf>,
}

impl Worker {
    fn new(options: Options) -> Worker {
        Worker { options, failures: Prints::default(), seen: Prints::default(), causes: Vec::new(), reported: Vec::new() }
    }

    fn scan(&mut self) -> Summary {
        let mut summary = Summary::default();
        let listing = match files::list_inputs(&self.options.input_dir) {
            Ok(listing) => listing,
            Err(e) => {
                self.environment_failure(files::cause(&e), format!("cannot list {}: {}", shown(&self.options.input_dir), files::cause(&e)));
                summary.failed += 1;
                return summary;
            }
        };
        for link in &listing.links {
            self.report_once(link, "is a symbolic link: links are not followed (the image it points at is processed where it is)");
        }
        for (directory, error) in &listing.unlisted {
            let why = if error.raw_os_error().map_or(false, |code| code == if cfg!(target_os = "wasi") { 25 } else { 84 }) {
                "a file name in it is not valid UTF-8, and this runtime refuses to list such a directory: rename that file".to_string()
            } else {
                files::cause(error)
            };
            let directory = if directory.as_os_str().is_empty() { self.options.input_dir.clone() } else { directory.clone() };
            self.report_once(&directory, &format!("cannot list this directory: {}", why));
            summary.failed += 1; // its images are not processed: a Job must not call that success
        }
        let mut seen = Prints::default();
        for relative in listing.inputs {
            let source = self.options.input_dir.join(&relative);
            let print = match files::fingerprint(&source) {
                Some(print) => print,
                None => continue, // gone since the listing
            };
            if !self.options.once {
                let settled = self.seen.get(&relative) == Some(&print);
                seen.insert(relative.clone(), print.clone());
                if !settled {
                    summary.not_ready += 1;
                    continue;
                }
                if self.failures.get(&relative) == Some(&print) {
                    continue;
                }
            }
            match self.process(&relative, &source, &print) {
                Outcome::Written { output, bytes, millis, frames } => {
                    self.failures.remove(&relative);
                    if !self.causes.is_empty() {
                        eprintln!("fractalify: writing again ({} cleared)", self.causes.join(", "));
                        self.causes.clear();
                    }
                    summary.written += 1;
                    let first = if frames > 1 { format!("first frame of {}; ", frames) } else { String::new() };
                    println!("wrote {} ({}{} bytes, {} ms)", shown(&output), first, bytes, millis);
                }
                Outcome::AlreadyDone => summary.already_done += 1,
                Outcome::ClaimedElsewhere => summary.elsewhere += 1,
                Outcome::NotReady => summary.not_ready += 1,
                Outcome::Failed(Failure::Input(reason)) => {
                    summary.failed += 1;
                    eprintln!("fractalify: {}: {}", shown(&relative), reason);
                    self.failures.insert(relative, print);
                }
                Outcome::Failed(Failure::Environment { cause, message }) => {
                    summary.failed += 1;
                    if !self.options.once && files::directory_removed(&self.options.output_dir, &self.options.instance) {
                        eprintln!(
                            "fractalify: the output directory {} was removed while this instance ran; exiting (status {}) so that it is restarted on the directory there now",
                            shown(&self.options.output_dir),
                            OUTPUT_REMOVED
                        );
                        process::exit(OUTPUT_REMOVED);
                    }
                    self.environment_failure(cause, message);
                }
            }
        }
        self.seen = seen;
        summary
    }

    /// Reports a failure of the surroundings once per cause; the inputs it hit stay pending.
    fn environment_failure(&mut self, cause: String, message: String) {
        if !self.causes.contains(&cause) {
            let retry = if self.options.once { "" } else { "; pending images are retried on every scan until that clears" };
            eprintln!("fractalify: {}{}", message, retry);
            self.causes.push(cause);
        }
    }

    fn report_once(&mut self, path: &Path, what: &str) {
        if !self.reported.iter().any(|p| p == path) {
            eprintln!("fractalify: {}: {}", shown(path), what);
            self.reported.push(path.to_path_buf());
        }
    }

    fn process(&self, relative: &Path, source: &Path, print: &Fingerprint) -> Outcome {
        // The content, not the extension, decides the format and so the output's name.
        let header = match read_header(source) {
            Ok(header) => header,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Outcome::NotReady,
            Err(e) => return Outcome::Failed(Failure::io("read", relative, &e)),
        };
        let format = match codec::sniff(&header) {
            Ok(format) => format,
            Err(reason) => return Outcome::Failed(Failure::Input(reason)),
        };
        let planned = files::output_relative(relative, format);
        let output = self.options.output_dir.join(&planned);
        if output.exists() {
            return Outcome::AlreadyDone;
        }
        // A file larger than the whole budget is refused before it is read.
        if print.len() > self.options.max_bytes {
            return Outcome::Failed(Failure::Input(format!("too large for --max-bytes {}: the file alone is {} bytes", self.options.max_bytes, print.len())));
        }
        let claim = match files::try_claim(&output, &self.options.instance) {
            Ok(Some(claim)) => claim,
            Ok(None) => return Outcome::ClaimedElsewhere,
            Err(e) => return Outcome::Failed(Failure::io("claim", &planned, &e)),
        };
        // Another instance may have finished it between our check and our claim.
        if output.exists() {
            return Outcome::AlreadyDone;
        }
        let started = Instant::now();
        let rendered = match self.render(source, format) {
            Ok(rendered) => rendered,
            Err(outcome) => return outcome,
        };
        let (bytes, frames) = rendered;
        let written = files::write_atomically(&output, &bytes, &self.options.instance);
        drop(claim);
        match written {
            Ok(()) => Outcome::Written { output: planned, bytes: bytes.len(), millis: started.elapsed().as_millis(), frames },
            Err(e) => Outcome::Failed(Failure::io("write", &planned, &e)),
        }
    }

    /// Reads, checks, decodes, runs the kernel and encodes one input: the output bytes and the
    /// input's number of frames (only the first is processed).
    fn render(&self, source: &Path, format: Format) -> Result<(Vec<u8>, u32), Outcome> {
        let bytes = match files::read_whole(source) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Outcome::NotReady),
            Err(e) => return Err(Outcome::Failed(Failure::io("read", source.strip_prefix(&self.options.input_dir).unwrap_or(source), &e))),
        };
        if codec::sniff(&bytes).ok() != Some(format) {
            return Err(Outcome::NotReady); // replaced while being read
        }
        let input = |reason: String| Outcome::Failed(Failure::Input(reason));
        let frames = codec::inspect(&bytes, format).map_err(input)?;
        let limits = codec::DecodeLimits { max_pixels: self.options.max_pixels, max_bytes: self.options.max_bytes };
        let mut pixels = codec::decode(&bytes, format, limits).map_err(input)?;
        drop(bytes);
        fractalify::fractalify(&mut pixels.data, pixels.width, pixels.height, pixels.channels, &self.options.params);
        let encoded = codec::encode(pixels, format).map_err(input)?;
        Ok((encoded, frames))
    }
}

/// The first bytes of a file: enough to recognise every supported format.
fn read_header(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut header = Vec::with_capacity(64);
    fs::File::open(path)?.take(64).read_to_end(&mut header)?;
    Ok(header)
}
