//! The command line and its `FRACTALIFY_*` environment variables: a flag beats its variable,
//! an empty variable counts as unset, switches accept `1`/`0`/`true`/`false`.

use std::path::PathBuf;
use std::time::Duration;

use fractalify::{Channel, JuliaParams};

use crate::decimal::{parse_constant, parse_seconds};

pub const USAGE: &str = "usage: fractalify [--once] [--interval SECONDS] [--c RE,IM] [--max-iter N] \
[--channel red|green|blue] [--max-pixels N] [--max-bytes N] [--instance ID] INPUT_DIR OUTPUT_DIR";

pub const HELP: &str = "Writes a Julia-set tinted copy of every image under INPUT_DIR into OUTPUT_DIR.

options (each also read from the environment, e.g. FRACTALIFY_ONCE=1, FRACTALIFY_C=-0.8,0.156):
  --once                     process what is there now, then exit (FRACTALIFY_ONCE)
  --interval SECONDS         pause between scans in watch mode, default 5 (FRACTALIFY_INTERVAL)
  --c RE,IM                  the Julia constant, default -0.4,0.6 (FRACTALIFY_C)
  --max-iter N               iteration bound 1..=255, default 255 (FRACTALIFY_MAX_ITER)
  --channel red|green|blue   channel that receives the count, default green (FRACTALIFY_CHANNEL)
  --max-pixels N             refuse larger images before decoding, default 67108864 (FRACTALIFY_MAX_PIXELS)
  --max-bytes N              memory one image may take (file, image, output), default 268435456 (FRACTALIFY_MAX_BYTES)
  --instance ID              names this instance's claims and temporary files; a restarted instance
                             takes back what its earlier run left (FRACTALIFY_INSTANCE)
  --help, --version";

/// `JuliaParams::default()`'s constant, as text.
const DEFAULT_CONSTANT: &str = "-0.4,0.6";

/// Everything one run needs, validated.
#[derive(Clone, Debug)]
pub struct Options {
    pub once: bool,
    pub interval: Duration,
    pub params: JuliaParams,
    /// The constant as given (for the banner: printing floats would cost the module core's formatter).
    pub constant: String,
    pub max_pixels: u64,
    pub max_bytes: u64,
    pub instance: String,
    /// Whether the instance ID was given (a random one never has leftovers to take back).
    pub instance_given: bool,
    pub input_dir: PathBuf,
    pub output_dir: PathBuf,
}

#[derive(Debug)]
pub enum Command {
    Run(Options),
    Help,
    Version,
}

/// One option: its flag, its variable, whether it takes a value.
struct Spec {
    flag: &'static str,
    var: &'static str,
    takes_value: bool,
}

const SPECS: &[Spec] = &[
    Spec { flag: "--once", var: "FRACTALIFY_ONCE", takes_value: false },
    Spec { flag: "--interval", var: "FRACTALIFY_INTERVAL", takes_value: true },
    Spec { flag: "--c", var: "FRACTALIFY_C", takes_value: true },
    Spec { flag: "--max-iter", var: "FRACTALIFY_MAX_ITER", takes_value: true },
    Spec { flag: "--channel", var: "FRACTALIFY_CHANNEL", takes_value: true },
    Spec { flag: "--max-pixels", var: "FRACTALIFY_MAX_PIXELS", takes_value: true },
    Spec { flag: "--max-bytes", var: "FRACTALIFY_MAX_BYTES", takes_value: true },
    Spec { flag: "--instance", var: "FRACTALIFY_INSTANCE", takes_value: true },
];

/// Parses argv (argv[0] is the program name) with `env` looking up variables.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, String> {
    let mut given: Vec<(&'static Spec, String)> = Vec::new();
    let mut positional: Vec<String> = Vec::new();
    let mut rest = args.iter().skip(1);
    let mut only_positional = false;
    while let Some(arg) = rest.next() {
        if only_positional || !arg.starts_with("--") || arg == "-" {
            positional.push(arg.clone());
            continue;
        }
        match arg.as_str() {
            "--" => {
                only_positional = true;
                continue;
            }
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            _ => {}
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        let spec = SPECS
            .iter()
            .find(|s| s.flag == name)
            .ok_or_else(|| format!("unknown option {} ({})", name, USAGE))?;
        let value = match (spec.takes_value, inline) {
            (true, Some(v)) => v,
            (true, None) => rest.next().cloned().ok_or_else(|| format!("{} needs a value", spec.flag))?,
            (false, Some(v)) => v,
            (false, None) => "true".to_string(),
        };
        given.push((spec, value));
    }
    if positional.len() != 2 {
        return Err(format!("expected INPUT_DIR and OUTPUT_DIR, got {} argument(s) ({})", positional.len(), USAGE));
    }

    // A flag beats its variable; the last of a repeated flag wins.
    let lookup = |spec_flag: &str| -> Option<(String, String)> {
        let spec = SPECS.iter().find(|s| s.flag == spec_flag).expect("known option");
        if let Some((_, v)) = given.iter().rev().find(|(s, _)| s.flag == spec.flag) {
            return Some((spec.flag.to_string(), v.clone()));
        }
        env(spec.var).filter(|v| !v.is_empty()).map(|v| (spec.var.to_string(), v))
    };

    let once = match lookup("--once") {
        Some((source, v)) => parse_switch(&v).ok_or_else(|| format!("{} must be 1, 0, true or false, not {:?}", source, v))?,
        None => false,
    };
    let interval = match lookup("--interval") {
        Some((source, v)) => parse_seconds(v.trim(), 86_400)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{} must be a number of seconds, more than 0 and at most 86400, not {:?}", source, v))?,
        None => Duration::from_secs(5),
    };
    let mut params = JuliaParams::default();
    let mut constant = DEFAULT_CONSTANT.to_string();
    if let Some((source, v)) = lookup("--c") {
        let (cr, ci) = parse_constant(&v).ok_or_else(|| format!("{} must be RE,IM (e.g. -0.4,0.6), not {:?}", source, v))?;
        params.cr = cr;
        params.ci = ci;
        constant = v.trim().to_string();
    }
    if let Some((source, v)) = lookup("--max-iter") {
        params.max_iter = v
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("{} must be a whole number from 1 to 255, not {:?}", source, v))?;
    }
    if let Some((source, v)) = lookup("--channel") {
        params.channel = Channel::parse(v.trim()).ok_or_else(|| format!("{} must be red, green or blue, not {:?}", source, v))?;
    }
    let max_pixels = match lookup("--max-pixels") {
        Some((source, v)) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("{} must be a whole number of pixels, at least 1, not {:?}", source, v))?,
        None => 67_108_864,
    };
    let max_bytes = match lookup("--max-bytes") {
        Some((source, v)) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("{} must be a whole number of bytes, at least 1, not {:?}", source, v))?,
        None => 256 << 20,
    };
    let instance_given = lookup("--instance").is_some();
    let instance = match lookup("--instance") {
        Some((source, v)) => {
            let ok = !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(format!("{} must be 1 to 64 letters, digits, '-' or '_', not {:?}", source, v));
            }
            v
        }
        None => random_instance_id(),
    };

    Ok(Command::Run(Options {
        once,
        interval,
        params,
        constant,
        max_pixels,
        max_bytes,
        instance,
        instance_given,
        input_dir: PathBuf::from(&positional[0]),
        output_dir: PathBuf::from(&positional[1]),
    }))
}

fn parse_switch(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A random id without a dependency: std seeds `RandomState` from the host's entropy
/// (`random_get` under WASI).
fn random_instance_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    // (No process id mixed in: `std::process::id` panics under WASI.)
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u8(0);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        std::iter::once("fractalify").chain(list.iter().copied()).map(String::from).collect()
    }

    fn run(list: &[&str], vars: &[(&str, &str)]) -> Result<Options, String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        match parse(&args(list), &env)? {
            Command::Run(options) => Ok(options),
            other => panic!("expected a run, got {:?}", other),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&["/in", "/out"], &[]).unwrap();
        assert!(!o.once);
        assert_eq!(o.interval, Duration::from_secs(5));
        assert_eq!(o.params, JuliaParams::default());
        assert_eq!(o.max_pixels, 67_108_864);
        assert_eq!(o.max_bytes, 256 << 20);
        assert!(!o.instance_given);
    }

    #[test]
    fn flag_beats_variable_and_empty_variable_is_unset() {
        let o = run(&["--c", "-0.7269,0.1889", "/in", "/out"], &[("FRACTALIFY_C", "-0.8,0.156"), ("FRACTALIFY_MAX_ITER", "")]).unwrap();
        assert_eq!((o.params.cr, o.params.ci), (-0.7269, 0.1889));
        assert_eq!(o.params.max_iter, 255);
        let o = run(&["/in", "/out"], &[("FRACTALIFY_C", "-0.8,0.156"), ("FRACTALIFY_ONCE", "true")]).unwrap();
        assert_eq!((o.params.cr, o.params.ci), (-0.8, 0.156));
        assert!(o.once);
        let o = run(&["--once=0", "/in", "/out"], &[("FRACTALIFY_ONCE", "1")]).unwrap();
        assert!(!o.once);
    }

    #[test]
    fn the_default_constant_text_is_the_default_constant() {
        let params = JuliaParams::default();
        assert_eq!(parse_constant(DEFAULT_CONSTANT), Some((params.cr, params.ci)));
        let o = run(&["--interval", "0.25", "--c", " -0.8,0.156 ", "/in", "/out"], &[]).unwrap();
        assert_eq!((o.interval, o.constant.as_str()), (Duration::from_millis(250), "-0.8,0.156"));
    }

    #[test]
    fn bad_values_name_their_source() {
        assert!(run(&["--max-iter", "0", "/in", "/out"], &[]).unwrap_err().contains("--max-iter"));
        assert!(run(&["/in", "/out"], &[("FRACTALIFY_CHANNEL", "alpha")]).unwrap_err().contains("FRACTALIFY_CHANNEL"));
        assert!(run(&["--bogus", "/in", "/out"], &[]).unwrap_err().contains("unknown option --bogus"));
        assert!(run(&["/in"], &[]).unwrap_err().contains("INPUT_DIR"));
        assert!(run(&["--interval", "0", "/in", "/out"], &[]).is_err());
        assert!(run(&["--instance", "a/b", "/in", "/out"], &[]).is_err());
    }
}
