//! upgraded-initramfs-hook: runs in the initramfs after an upgrade's kexec, as early
//! as systemd can start it, and keeps the PIDs of the checkpointed processes free.
//!
//! CRIU restores processes with the PIDs they had (criu#1716: a PID that something
//! started during boot has taken fails the restore). The daemon writes the highest PID
//! of the generation onto the target kernel's command line as `upgraded.pid_floor=<N>`
//! next to `upgraded.generation=<id>`; this hook moves the PID counter there
//! (`/proc/sys/kernel/ns_last_pid`), so boot hands out PIDs above N and those at or
//! below it stay free until the counter wraps at `pid_max`. It then leaves a note for
//! the restore in the real root, `/run/upgraded/boot-plan`:
//!
//! ```text
//! generation=<id>
//! pid_floor=<N, or empty>
//! reserved=<yes|no>
//! ```
//!
//! A boot that comes without our arguments although an upgrade waits for it (a reset
//! or power cut after the kexec was prepared: the boot loader's default kernel starts
//! with its own command line) gets them from the boot note the daemon left in the
//! area: `upgraded-reserve-pids.service` runs this program in the real root, as soon
//! as the area is mounted, with `--boot-note <area>/boot-note`. The note holds the
//! same arguments, in command-line syntax, and is read by the same strict rules.
//!
//! It never blocks or fails the boot: every error is logged (to /dev/kmsg, else
//! stderr) and the exit status is 0 whatever happened, even on a panic. A boot without
//! `upgraded.generation=` is an ordinary boot: nothing is done.
//!
//! The command line is read with its own small, strict reader rather than the
//! `upgraded` crate's: this binary goes into every initramfs and stays free of the
//! daemon's dependencies. It accepts exactly what `upgraded::kernel::target_cmdline`
//! writes and ignores, with a log line, anything else; the tests check its generation
//! rule against `dumper::manifest::GenerationId`.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const TAG: &str = "upgraded-initramfs-hook";
const GENERATION_KEY: &[u8] = b"upgraded.generation";
const PID_FLOOR_KEY: &[u8] = b"upgraded.pid_floor";
const PREFIX: &[u8] = b"upgraded.";
/// RESERVED_PIDS: after a wrap the kernel hands out PIDs from here, so a lower floor
/// reserves nothing.
const MIN_PID_FLOOR: u32 = 300;
/// PID_MAX_LIMIT on 64-bit Linux, the largest `pid_max`; also what systemd's
/// 50-pid-max.conf sets on 64-bit systems.
const PID_MAX_LIMIT: u32 = 4_194_304;
/// PIDs boot may use above the floor before the counter wraps back below it. A
/// `pid_max` with less room than this is raised to [`PID_MAX_LIMIT`].
const BOOT_HEADROOM: u32 = 32_768;
/// The longest command line read: the kernel's is at most a few KiB
/// (COMMAND_LINE_SIZE), so a longer file is not one.
const MAX_CMDLINE_BYTES: u64 = 64 * 1024;
/// Ignored arguments logged one by one; /dev/kmsg drops a writer's lines beyond ten
/// in five seconds, and a hostile command line may have thousands.
const MAX_LOGGED_IGNORED: usize = 4;

fn main() -> ExitCode {
    let mut log = Log::Stderr;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // Catching a panic keeps the promise below even for a bug in this file; the panic
    // message itself goes to stderr.
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        if fault_point() {
            log.warn("injected fault (FAILPOINTS): no PIDs reserved, booting normally");
            return Outcome::NoCmdline;
        }
        hook(args, &mut log)
    }));
    if outcome.is_err() {
        log.warn("internal error (a panic); booting normally");
    }
    // Always 0: the boot must go on whatever happened here. The restore in the real
    // root reads the boot plan (or its absence) and decides there.
    ExitCode::SUCCESS
}

// --- fault point (test builds) ---------------------------------------------------------

/// The hook's fault point for the VM fault matrix, `hook` in `FAILPOINTS` (the same
/// rules as `dumper::faults`, which this binary does not link): `return(error)` makes
/// the hook give up (true), `return(abort)` crashes it, `return(reset)` resets the
/// machine. Always false in a release build.
#[cfg(not(feature = "failpoints"))]
fn fault_point() -> bool {
    false
}

#[cfg(feature = "failpoints")]
fn fault_point() -> bool {
    let _scenario = fail::FailScenario::setup();
    (|| {
        fail::fail_point!("hook", |arg| {
            let action = arg.unwrap_or_default();
            let line = format!("<4>{TAG}: FAULT hook: {action}\n");
            let _ = OpenOptions::new()
                .append(true)
                .open("/dev/kmsg")
                .and_then(|mut k| k.write_all(line.as_bytes()));
            match action.as_str() {
                "abort" => std::process::abort(),
                "reset" => {
                    let _ = fs::write("/proc/sysrq-trigger", "b");
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
                _ => true,
            }
        });
        false
    })()
}

// --- arguments ------------------------------------------------------------------------

/// Where the hook reads and writes; other than the defaults only in tests (the flags are
/// not documented for use).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Paths {
    /// /proc/cmdline, or the boot note.
    cmdline: PathBuf,
    /// Whether `cmdline` is the daemon's boot note (`--boot-note`), for the log.
    note: bool,
    proc: PathBuf,
    run: PathBuf,
    kmsg: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            cmdline: "/proc/cmdline".into(),
            note: false,
            proc: "/proc".into(),
            run: "/run".into(),
            kmsg: "/dev/kmsg".into(),
        }
    }
}

/// `--boot-note FILE` (documented, see the module comment), and for tests `--cmdline
/// FILE`, `--proc DIR`, `--run DIR`, `--kmsg FILE`; each at most once, and only one of
/// `--boot-note` and `--cmdline`.
fn parse_args(args: Vec<OsString>) -> Result<Paths, String> {
    let mut paths = Paths::default();
    let mut seen: Vec<OsString> = Vec::new();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let slot = match flag.to_str() {
            Some("--cmdline" | "--boot-note") => {
                if seen.iter().any(|f| f == "--cmdline" || f == "--boot-note") {
                    return Err("--cmdline and --boot-note name the same input: give one".into());
                }
                paths.note = flag == "--boot-note";
                &mut paths.cmdline
            }
            Some("--proc") => &mut paths.proc,
            Some("--run") => &mut paths.run,
            Some("--kmsg") => &mut paths.kmsg,
            _ => {
                return Err(format!(
                    "unknown argument {}",
                    shown(flag.as_encoded_bytes())
                ))
            }
        };
        if seen.contains(&flag) {
            return Err(format!("{} given twice", flag.to_string_lossy()));
        }
        let Some(value) = args.next().filter(|v| !v.is_empty()) else {
            return Err(format!("{} needs a path", flag.to_string_lossy()));
        };
        *slot = value.into();
        seen.push(flag);
    }
    Ok(paths)
}

// --- logging --------------------------------------------------------------------------

/// Where log lines go: the kernel log (journald picks it up once it runs; before that
/// the console shows it), else stderr; in tests, memory.
enum Log {
    Kmsg(File),
    Stderr,
    #[cfg(test)]
    Memory(Vec<String>),
}

impl Log {
    fn open(kmsg: &Path) -> Log {
        match OpenOptions::new().append(true).open(kmsg) {
            Ok(f) => Log::Kmsg(f),
            Err(_) => Log::Stderr,
        }
    }

    fn info(&mut self, msg: &str) {
        self.line(6, msg);
    }

    fn warn(&mut self, msg: &str) {
        self.line(4, msg);
    }

    /// One record per line: `<level>` is the kernel log's priority prefix (facility
    /// user). A failed write falls back to stderr for good.
    fn line(&mut self, level: u8, msg: &str) {
        match self {
            Log::Kmsg(f) => {
                // One write(2) per record: /dev/kmsg takes each write as one line.
                if f.write_all(format!("<{level}>{TAG}: {msg}\n").as_bytes())
                    .is_err()
                {
                    *self = Log::Stderr;
                    self.line(level, msg);
                }
            }
            Log::Stderr => {
                let _ = writeln!(io::stderr(), "{TAG}: {msg}");
            }
            #[cfg(test)]
            Log::Memory(lines) => lines.push(msg.to_owned()),
        }
    }
}

/// A value from outside (a command line argument, a file's content) for a log line:
/// quoted, control characters and quotes escaped, cut short.
fn shown(value: &[u8]) -> String {
    const MAX_CHARS: usize = 80;
    let text = String::from_utf8_lossy(value);
    let mut out = String::from("\"");
    for (i, c) in text.chars().enumerate() {
        if i == MAX_CHARS {
            let _ = write!(out, "\"... ({} bytes)", value.len());
            return out;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

// --- the command line -----------------------------------------------------------------

/// Our arguments on the command line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tokens {
    /// Set when exactly one valid `upgraded.generation=` was given.
    generation: Option<String>,
    /// Set when exactly one valid `upgraded.pid_floor=` was given.
    pid_floor: Option<u32>,
    /// Our arguments that were ignored, and why.
    ignored: Vec<String>,
}

/// Reads `upgraded.generation=` and `upgraded.pid_floor=`. Arguments split as the
/// kernel splits them (`next_arg` in lib/cmdline.c: at whitespace, byte 0xA0 included,
/// outside double quotes; `--` ends the kernel's part), but unlike the kernel nothing
/// of ours may be quoted: upgraded never writes quotes. A key given twice is ignored
/// altogether, as the valid-looking one may be the stale or planted one.
fn read_tokens(cmdline: &[u8]) -> Tokens {
    let mut out = Tokens::default();
    let mut generations = Vec::new();
    let mut floors = Vec::new();
    let mut after_separator = false;
    for arg in split_args(cmdline) {
        if arg == b"--" && !after_separator {
            after_separator = true;
            continue;
        }
        let unquoted = arg.strip_prefix(b"\"").unwrap_or(arg);
        if !unquoted.starts_with(PREFIX) {
            continue;
        }
        let mut ignore = |why: &str| out.ignored.push(format!("{}: {why}", shown(arg)));
        if after_separator {
            ignore("after \"--\", it is an argument for init");
            continue;
        }
        if arg.contains(&b'"') {
            ignore("upgraded writes its arguments without quotes");
            continue;
        }
        let (key, value) = match arg.iter().position(|&c| c == b'=') {
            Some(eq) => (&arg[..eq], Some(&arg[eq + 1..])),
            None => (arg, None),
        };
        let need_value = || "it needs =<value>".to_string();
        let checked = if key == GENERATION_KEY {
            let id = value.ok_or_else(need_value).and_then(check_generation);
            generations.push(id.clone().ok());
            id.map(|_| ())
        } else if key == PID_FLOOR_KEY {
            let floor = value.ok_or_else(need_value).and_then(check_pid_floor);
            floors.push(floor.clone().ok());
            floor.map(|_| ())
        } else {
            Err("upgraded knows no such argument".into())
        };
        if let Err(why) = checked {
            ignore(&why);
        }
    }
    out.generation = only_one(&mut out.ignored, GENERATION_KEY, generations);
    out.pid_floor = only_one(&mut out.ignored, PID_FLOOR_KEY, floors);
    out
}

/// The kernel's argument split; see [`read_tokens`].
fn split_args(cmdline: &[u8]) -> Vec<&[u8]> {
    let is_space = |b: u8| matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0xa0);
    let mut args = Vec::new();
    let mut i = 0;
    while i < cmdline.len() {
        if is_space(cmdline[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut in_quote = false;
        while i < cmdline.len() && (in_quote || !is_space(cmdline[i])) {
            in_quote ^= cmdline[i] == b'"';
            i += 1;
        }
        args.push(&cmdline[start..i]);
    }
    args
}

fn only_one<T>(ignored: &mut Vec<String>, key: &[u8], mut values: Vec<Option<T>>) -> Option<T> {
    if values.len() > 1 {
        ignored.push(format!(
            "{}: given {} times and it is unclear which one is meant, so none is used",
            shown(key),
            values.len()
        ));
        return None;
    }
    values.pop().flatten()
}

/// dumper's `GenerationId` rule: 1 to 64 of `[A-Za-z0-9._-]`, not starting with '.'.
fn check_generation(value: &[u8]) -> Result<String, String> {
    if value.is_empty() || value.len() > 64 {
        return Err("a generation id is 1 to 64 characters long".into());
    }
    if !value
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        return Err("a generation id has only letters, digits and . _ -".into());
    }
    if value[0] == b'.' {
        return Err("a generation id does not start with '.'".into());
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

/// Decimal digits only, no sign and no leading zero, in 300..=4194304: the rule of
/// `upgraded::kernel::parse_upgraded_tokens`.
fn check_pid_floor(value: &[u8]) -> Result<u32, String> {
    let range = || format!("a PID floor is a decimal number in {MIN_PID_FLOOR}..={PID_MAX_LIMIT}");
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(range());
    }
    if value.len() > 1 && value[0] == b'0' {
        return Err(format!("{}, without leading zeros", range()));
    }
    // At most 7 digits fit the range; fewer than 10 cannot overflow.
    if value.len() > 7 {
        return Err(range());
    }
    let n: u32 = value.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0'));
    if (MIN_PID_FLOOR..=PID_MAX_LIMIT).contains(&n) {
        Ok(n)
    } else {
        Err(range())
    }
}

// --- the hook -------------------------------------------------------------------------

/// What a run did. Whatever it is, the exit status is 0.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Arguments this program does not take: nothing was done.
    BadUsage,
    /// The command line could not be read: nothing was done.
    NoCmdline,
    /// No valid `upgraded.generation=`: an ordinary boot, nothing was done.
    NoGeneration,
    /// After an upgrade: whether the PIDs are reserved and the plan was written.
    Planned { reserved: bool, written: bool },
}

fn hook(args: Vec<OsString>, log: &mut Log) -> Outcome {
    let parsed = parse_args(args);
    if matches!(log, Log::Stderr) {
        let default = Paths::default();
        *log = Log::open(parsed.as_ref().map_or(&default.kmsg, |p| &p.kmsg));
    }
    match parsed {
        Ok(paths) => run(&paths, log),
        Err(e) => {
            log.warn(&format!("{e}; doing nothing"));
            Outcome::BadUsage
        }
    }
}

/// What the arguments were read from, for the log.
fn source(paths: &Paths) -> String {
    if paths.note {
        format!("the boot note {}", paths.cmdline.display())
    } else {
        "the kernel command line".into()
    }
}

fn run(paths: &Paths, log: &mut Log) -> Outcome {
    let cmdline = match read_capped(&paths.cmdline, MAX_CMDLINE_BYTES) {
        Ok(c) => c,
        Err(e) => {
            log.warn(&format!(
                "reading {}: {e}; no PIDs reserved, booting normally",
                paths.cmdline.display()
            ));
            return Outcome::NoCmdline;
        }
    };
    let tokens = read_tokens(&cmdline);
    for why in tokens.ignored.iter().take(MAX_LOGGED_IGNORED) {
        log.warn(&format!("ignored kernel argument {why}"));
    }
    if tokens.ignored.len() > MAX_LOGGED_IGNORED {
        log.warn(&format!(
            "{} more upgraded.* kernel arguments ignored",
            tokens.ignored.len() - MAX_LOGGED_IGNORED
        ));
    }
    let Some(generation) = tokens.generation else {
        log.info(&format!(
            "no valid upgraded.generation= in {}: nothing to do",
            source(paths)
        ));
        return Outcome::NoGeneration;
    };
    let floor_text = tokens.pid_floor.map(|f| f.to_string()).unwrap_or_default();
    log.info(&format!(
        "booted for generation {generation} (from {}), PID floor {}",
        source(paths),
        tokens.pid_floor.map_or("none".into(), |f| f.to_string())
    ));

    let reserved = match tokens.pid_floor {
        Some(floor) => reserve_pids(&paths.proc, floor, log),
        None => false,
    };

    let plan = format!(
        "generation={generation}\npid_floor={floor_text}\nreserved={}\n",
        if reserved { "yes" } else { "no" }
    );
    let dir = paths.run.join("upgraded");
    let written = match write_plan(&dir, plan.as_bytes()) {
        Ok(path) => {
            log.info(&format!(
                "wrote {} (reserved={})",
                path.display(),
                if reserved { "yes" } else { "no" }
            ));
            true
        }
        Err(e) => {
            log.warn(&format!("writing the boot plan in {}: {e}", dir.display()));
            false
        }
    };
    Outcome::Planned { reserved, written }
}

/// Moves the PID counter to `floor`, never back. True when, afterwards, the next PID
/// is above the floor because of this write; false otherwise (logged): when the counter
/// was already at or past the floor, boot may have used PIDs the restore needs.
///
/// Between reading and writing `ns_last_pid` a fork may move it on; in the initramfs,
/// this early, that is a handful of PIDs, not the thousands to the floor.
fn reserve_pids(proc: &Path, floor: u32, log: &mut Log) -> bool {
    let kernel = proc.join("sys/kernel");
    let last_pid_path = kernel.join("ns_last_pid");
    let pid_max_path = kernel.join("pid_max");
    let last_pid = match read_number(&last_pid_path) {
        Ok(n) => n,
        Err(e) => {
            log.warn(&format!(
                "reading {}: {e}; PIDs up to {floor} are not reserved",
                last_pid_path.display()
            ));
            return false;
        }
    };
    if last_pid >= u64::from(floor) {
        log.warn(&format!(
            "the last PID is already {last_pid}, at or past the floor {floor}: left as it is, \
             and boot may have taken PIDs the restore needs"
        ));
        return false;
    }

    // PIDs are below pid_max and wrap there: with too little room above the floor, boot
    // would wrap right into the PIDs kept free (and the initramfs' pid_max is often the
    // kernel's 32768, below the PIDs of a system running with systemd's 4194304). So it
    // is raised, never lowered, to the value systemd sets on 64-bit systems anyway.
    let floor64 = u64::from(floor);
    let pid_max = match read_number(&pid_max_path) {
        Ok(m) if m < floor64 + u64::from(BOOT_HEADROOM) && m < u64::from(PID_MAX_LIMIT) => {
            match write_number(&pid_max_path, PID_MAX_LIMIT.into()) {
                Ok(()) => {
                    log.info(&format!(
                        "raised pid_max from {m} to {PID_MAX_LIMIT} to make room above the \
                         PID floor {floor}"
                    ));
                    Some(u64::from(PID_MAX_LIMIT))
                }
                Err(e) => {
                    log.warn(&format!(
                        "raising {} from {m} to {PID_MAX_LIMIT}: {e}",
                        pid_max_path.display()
                    ));
                    Some(m)
                }
            }
        }
        Ok(m) => Some(m),
        Err(e) => {
            log.warn(&format!(
                "reading {}: {e}; trying the PID floor anyway",
                pid_max_path.display()
            ));
            None
        }
    };
    if let Some(pid_max) = pid_max {
        if floor64 + 1 >= pid_max {
            log.warn(&format!(
                "no PID is free above the floor {floor} below pid_max {pid_max}: PIDs up to \
                 {floor} are not reserved"
            ));
            return false;
        }
        let room = pid_max - 1 - floor64;
        if room < u64::from(BOOT_HEADROOM) {
            log.warn(&format!(
                "only {room} PIDs above the floor {floor} before they wrap at pid_max \
                 {pid_max}: boot may still take PIDs the restore needs"
            ));
        }
    }

    if let Err(e) = write_number(&last_pid_path, floor.into()) {
        log.warn(&format!(
            "writing {floor} to {}: {e}; PIDs up to {floor} are not reserved",
            last_pid_path.display()
        ));
        return false;
    }
    match read_number(&last_pid_path) {
        Ok(now) if now >= u64::from(floor) => {
            log.info(&format!(
                "moved the last PID from {last_pid} to {now}: PIDs up to {floor} stay free for \
                 the restore"
            ));
            true
        }
        Ok(now) => {
            log.warn(&format!(
                "wrote {floor} to {} but it reads {now}: PIDs up to {floor} are not reserved",
                last_pid_path.display()
            ));
            false
        }
        Err(e) => {
            log.warn(&format!(
                "reading {} back: {e}; PIDs up to {floor} are not reserved",
                last_pid_path.display()
            ));
            false
        }
    }
}

fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {limit} bytes"),
        ));
    }
    Ok(buf)
}

/// A sysctl's number, such as `ns_last_pid`'s "1234\n".
fn read_number(path: &Path) -> io::Result<u64> {
    let raw = read_capped(path, 32)?;
    let text = String::from_utf8_lossy(&raw);
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a number", shown(&raw)),
        )
    })
}

/// Writes a sysctl in one write(2), as procfs wants it.
fn write_number(path: &Path, n: u64) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
    f.write_all(n.to_string().as_bytes())
}

/// Writes `<dir>/boot-plan` (0600, `dir` 0700) atomically: a temporary file, fsync,
/// rename, fsync of the directory.
fn write_plan(dir: &Path, content: &[u8]) -> io::Result<PathBuf> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(dir)?;
            if !meta.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "it exists and is not a directory",
                ));
            }
            if meta.permissions().mode() & 0o777 != 0o700 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
            }
        }
        Err(e) => return Err(e),
    }
    let path = dir.join("boot-plan");
    let tmp = dir.join(".boot-plan.tmp");
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    /// A fake root: `cmdline`, `proc/sys/kernel/{ns_last_pid,pid_max}`, `run/`.
    struct Fake {
        dir: TempDir,
    }

    impl Fake {
        fn new(cmdline: &str, last_pid: &str, pid_max: &str) -> Fake {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("cmdline"), cmdline).unwrap();
            let kernel = dir.path().join("proc/sys/kernel");
            fs::create_dir_all(&kernel).unwrap();
            fs::write(kernel.join("ns_last_pid"), last_pid).unwrap();
            fs::write(kernel.join("pid_max"), pid_max).unwrap();
            fs::create_dir(dir.path().join("run")).unwrap();
            Fake { dir }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn args(&self) -> Vec<OsString> {
            [
                "--cmdline",
                self.path("cmdline").to_str().unwrap(),
                "--proc",
                self.path("proc").to_str().unwrap(),
                "--run",
                self.path("run").to_str().unwrap(),
            ]
            .iter()
            .map(OsString::from)
            .collect()
        }

        fn run(&self) -> (Outcome, Vec<String>) {
            run_with(self.args())
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.path(rel)).unwrap()
        }

        fn last_pid(&self) -> String {
            self.read("proc/sys/kernel/ns_last_pid")
        }

        fn plan(&self) -> Option<String> {
            fs::read_to_string(self.path("run/upgraded/boot-plan")).ok()
        }
    }

    fn run_with(args: Vec<OsString>) -> (Outcome, Vec<String>) {
        let mut log = Log::Memory(Vec::new());
        let outcome = hook(args, &mut log);
        let Log::Memory(lines) = log else {
            unreachable!()
        };
        (outcome, lines)
    }

    const UPGRADE: &str = "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro upgraded.generation=g-0002 \
                           upgraded.pid_floor=40000 quiet\n";

    #[test]
    fn the_floor_is_written_and_the_plan_left() {
        let fake = Fake::new(UPGRADE, "123\n", "4194304\n");
        let (outcome, log) = fake.run();
        assert_eq!(
            outcome,
            Outcome::Planned {
                reserved: true,
                written: true
            },
            "{log:?}"
        );
        assert_eq!(fake.last_pid(), "40000");
        assert_eq!(
            fake.plan().unwrap(),
            "generation=g-0002\npid_floor=40000\nreserved=yes\n"
        );
        let dir = fs::metadata(fake.path("run/upgraded")).unwrap();
        assert_eq!(dir.permissions().mode() & 0o7777, 0o700);
        let file = fs::metadata(fake.path("run/upgraded/boot-plan")).unwrap();
        assert_eq!(file.permissions().mode() & 0o7777, 0o600);
        assert!(!fake.path("run/upgraded/.boot-plan.tmp").exists());
        assert!(
            log.iter().any(|l| l.contains("from 123 to 40000")),
            "{log:?}"
        );
        assert!(log.iter().any(|l| l.contains("reserved=yes")), "{log:?}");
        // pid_max had room: untouched.
        assert_eq!(fake.read("proc/sys/kernel/pid_max"), "4194304\n");
    }

    #[test]
    fn a_boot_note_is_read_like_the_command_line() {
        // What StateStore::write_boot_note writes.
        let fake = Fake::new(
            "upgraded.generation=g-0002 upgraded.pid_floor=40000\n",
            "123\n",
            "4194304\n",
        );
        let mut args = fake.args();
        args[0] = "--boot-note".into();
        let (outcome, log) = run_with(args.clone());
        assert_eq!(
            outcome,
            Outcome::Planned {
                reserved: true,
                written: true
            },
            "{log:?}"
        );
        assert_eq!(fake.last_pid(), "40000");
        assert!(
            log.iter().any(|l| l.contains("from the boot note")),
            "{log:?}"
        );
        // Both inputs at once are refused, whatever the order.
        let mut both = args.clone();
        both.extend(["--cmdline".into(), fake.path("cmdline").into()]);
        assert_eq!(run_with(both).0, Outcome::BadUsage);
    }

    #[test]
    fn the_counter_is_never_lowered() {
        for last in ["40000", "40001\n", "4000000"] {
            let fake = Fake::new(UPGRADE, last, "4194304");
            let (outcome, log) = fake.run();
            assert_eq!(
                outcome,
                Outcome::Planned {
                    reserved: false,
                    written: true
                }
            );
            assert_eq!(fake.last_pid(), last, "{log:?}");
            assert_eq!(
                fake.plan().unwrap(),
                "generation=g-0002\npid_floor=40000\nreserved=no\n"
            );
            assert!(log.iter().any(|l| l.contains("already")), "{log:?}");
        }
    }

    #[test]
    fn a_small_pid_max_is_raised_first() {
        let fake = Fake::new(UPGRADE, "200", "32768\n");
        let (outcome, log) = fake.run();
        assert!(
            matches!(outcome, Outcome::Planned { reserved: true, .. }),
            "{log:?}"
        );
        assert_eq!(fake.read("proc/sys/kernel/pid_max"), "4194304");
        assert_eq!(fake.last_pid(), "40000");
        // A floor near the limit: set, with a warning about the little room left.
        let line = "upgraded.generation=g1 upgraded.pid_floor=4194000";
        let fake = Fake::new(line, "200", "32768");
        let (outcome, log) = fake.run();
        assert!(
            matches!(outcome, Outcome::Planned { reserved: true, .. }),
            "{log:?}"
        );
        assert_eq!(fake.last_pid(), "4194000");
        assert!(log.iter().any(|l| l.contains("only 303 PIDs")), "{log:?}");
        // At the limit nothing is left above the floor: the counter would wrap at once.
        let line = "upgraded.generation=g1 upgraded.pid_floor=4194303";
        let fake = Fake::new(line, "200", "4194304");
        let (outcome, log) = fake.run();
        assert!(
            matches!(
                outcome,
                Outcome::Planned {
                    reserved: false,
                    ..
                }
            ),
            "{log:?}"
        );
        assert_eq!(fake.last_pid(), "200");
        // pid_max unreadable: the floor is tried anyway (the kernel refuses it if too high).
        let fake = Fake::new(UPGRADE, "200", "32768");
        fs::remove_file(fake.path("proc/sys/kernel/pid_max")).unwrap();
        let (outcome, log) = fake.run();
        assert!(
            matches!(outcome, Outcome::Planned { reserved: true, .. }),
            "{log:?}"
        );
        assert!(log.iter().any(|l| l.contains("pid_max")), "{log:?}");
    }

    #[test]
    fn invalid_floors_are_ignored_but_the_plan_is_written() {
        for floor in [
            "",
            "299",
            "0",
            "0400",
            "+400",
            "-400",
            "0x400",
            "4194305",
            "99999999999999999999999",
            "\"400\"",
            "400 upgraded.pid_floor=500",
        ] {
            let line = format!("ro upgraded.generation=g1 upgraded.pid_floor={floor}");
            let fake = Fake::new(&line, "100", "4194304");
            let (outcome, log) = fake.run();
            assert_eq!(
                outcome,
                Outcome::Planned {
                    reserved: false,
                    written: true
                },
                "{floor:?}"
            );
            assert_eq!(fake.last_pid(), "100", "{floor:?}");
            assert_eq!(
                fake.plan().unwrap(),
                "generation=g1\npid_floor=\nreserved=no\n"
            );
            assert!(
                log.iter().any(|l| l.starts_with("ignored kernel argument")),
                "{floor:?}: {log:?}"
            );
        }
        // No floor at all: a plan without one, nothing logged as ignored.
        let fake = Fake::new("upgraded.generation=g1", "100", "4194304");
        let (_, log) = fake.run();
        assert_eq!(
            fake.plan().unwrap(),
            "generation=g1\npid_floor=\nreserved=no\n"
        );
        assert!(!log.iter().any(|l| l.contains("ignored")), "{log:?}");
    }

    #[test]
    fn without_a_generation_nothing_is_done() {
        for line in [
            "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro quiet\n",
            "",
            "upgraded.pid_floor=40000",
            "upgraded.generation=../../etc upgraded.pid_floor=40000",
            "upgraded.generation=g1 upgraded.generation=g2 upgraded.pid_floor=40000",
            "upgraded.generation=\"g1\" upgraded.pid_floor=40000",
            "ro -- upgraded.generation=g1 upgraded.pid_floor=40000",
            "foo=\"x upgraded.generation=g1 upgraded.pid_floor=40000\"",
        ] {
            let fake = Fake::new(line, "100", "32768");
            let (outcome, log) = fake.run();
            assert_eq!(outcome, Outcome::NoGeneration, "{line:?}: {log:?}");
            assert_eq!(fake.last_pid(), "100");
            assert_eq!(fake.read("proc/sys/kernel/pid_max"), "32768");
            assert!(!fake.path("run/upgraded").exists(), "{line:?}");
        }
    }

    #[test]
    fn unwritable_paths_are_logged_and_the_boot_goes_on() {
        // No /proc at all: no reservation, the plan says so.
        let fake = Fake::new(UPGRADE, "100", "4194304");
        fs::remove_dir_all(fake.path("proc")).unwrap();
        let (outcome, log) = fake.run();
        assert_eq!(
            outcome,
            Outcome::Planned {
                reserved: false,
                written: true
            }
        );
        assert!(log.iter().any(|l| l.contains("ns_last_pid")), "{log:?}");
        assert!(fake.plan().unwrap().ends_with("reserved=no\n"));

        // /run/upgraded is a file, and ns_last_pid holds rubbish.
        let fake = Fake::new(UPGRADE, "garbage", "4194304");
        fs::write(fake.path("run/upgraded"), "x").unwrap();
        let (outcome, log) = fake.run();
        assert_eq!(
            outcome,
            Outcome::Planned {
                reserved: false,
                written: false
            }
        );
        assert!(log.iter().any(|l| l.contains("not a number")), "{log:?}");
        assert!(log.iter().any(|l| l.contains("boot plan")), "{log:?}");

        // /run/upgraded a symlink: not followed.
        let fake = Fake::new(UPGRADE, "100", "4194304");
        let elsewhere = fake.path("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, fake.path("run/upgraded")).unwrap();
        let (outcome, _) = fake.run();
        assert!(matches!(outcome, Outcome::Planned { written: false, .. }));
        assert!(!elsewhere.join("boot-plan").exists());

        // No command line.
        let fake = Fake::new(UPGRADE, "100", "4194304");
        fs::remove_file(fake.path("cmdline")).unwrap();
        assert_eq!(fake.run().0, Outcome::NoCmdline);

        // A "command line" far too long to be one.
        let fake = Fake::new(&"a".repeat(100_000), "100", "4194304");
        assert_eq!(fake.run().0, Outcome::NoCmdline);

        // Arguments this program does not take.
        for args in [
            vec!["--bogus"],
            vec!["--cmdline"],
            vec!["--run", ""],
            vec!["--run", "/a", "--run", "/b"],
        ] {
            let args = args.into_iter().map(OsString::from).collect();
            assert_eq!(run_with(args).0, Outcome::BadUsage);
        }
    }

    #[test]
    fn an_existing_plan_directory_is_tightened_and_the_plan_replaced() {
        let fake = Fake::new(UPGRADE, "100", "4194304");
        let dir = fake.path("run/upgraded");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("boot-plan"), "old").unwrap();
        fs::write(dir.join(".boot-plan.tmp"), "stale").unwrap();
        assert!(matches!(
            fake.run().0,
            Outcome::Planned { written: true, .. }
        ));
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(fake.plan().unwrap().starts_with("generation=g-0002\n"));
    }

    #[test]
    fn hostile_command_lines_are_logged_briefly() {
        let mut line: String = (0..1000).map(|i| format!("upgraded.k{i}=1 ")).collect();
        line.push_str(&format!("upgraded.generation={}", "x".repeat(10_000)));
        let fake = Fake::new(&line, "100", "4194304");
        let (outcome, log) = fake.run();
        assert_eq!(outcome, Outcome::NoGeneration);
        assert!(log.len() <= MAX_LOGGED_IGNORED + 2, "{}", log.len());
        assert!(log.iter().all(|l| l.len() < 300), "{log:?}");
        assert!(log.iter().any(|l| l.contains("997 more")), "{log:?}");
        // Control characters and quotes come out escaped: one log line stays one.
        let t = read_tokens(b"upgraded.generation=a\nb upgraded.x=\x1b[2J\"");
        assert!(t
            .ignored
            .iter()
            .all(|l| !l.contains('\n') && !l.contains('\x1b')));
    }

    #[test]
    fn tokens_are_read_strictly() {
        let t = read_tokens(UPGRADE.as_bytes());
        assert_eq!(t.generation.as_deref(), Some("g-0002"));
        assert_eq!(t.pid_floor, Some(40_000));
        assert!(t.ignored.is_empty());
        // Whitespace the kernel splits at, quotes it does not split inside.
        let t = read_tokens(b"a\tupgraded.generation=g1\x0bupgraded.pid_floor=300\xa0x");
        assert_eq!(
            (t.generation.as_deref(), t.pid_floor),
            (Some("g1"), Some(300))
        );
        for (line, ignored) in [
            ("upgraded.generation", 1),
            ("upgraded.pid_floor", 1),
            ("\"upgraded.generation=g1\"", 1),
            ("ro \"upgraded.generation=g1", 1),
            ("upgraded.Generation=g1", 1),
            ("upgraded.pid_floor=500 upgraded.pid_floor=500", 1),
            ("upgraded.generation=g1 upgraded.generation=g1", 1),
            ("xupgraded.generation=g1 upgraded_generation=g1", 0),
        ] {
            let t = read_tokens(line.as_bytes());
            assert_eq!(t.generation, None, "{line:?}");
            assert_eq!(t.pid_floor, None, "{line:?}");
            assert_eq!(t.ignored.len(), ignored, "{line:?}: {:?}", t.ignored);
        }
        let t = read_tokens(b"upgraded.pid_floor");
        assert!(
            t.ignored[0].ends_with("it needs =<value>"),
            "{:?}",
            t.ignored
        );
        // One key's duplicates do not spoil the other.
        let t = read_tokens(b"upgraded.generation=g1 upgraded.pid_floor=1 upgraded.pid_floor=2");
        assert_eq!(t.generation.as_deref(), Some("g1"));
        assert_eq!(t.pid_floor, None);
        assert_eq!(t.ignored.len(), 3, "{:?}", t.ignored);
        // After "--" it is init's.
        let t = read_tokens(b"upgraded.pid_floor=500 -- upgraded.pid_floor=600");
        assert_eq!(t.pid_floor, Some(500));
        assert_eq!(t.ignored.len(), 1);
    }

    #[test]
    fn pid_floors_are_decimal_and_in_range() {
        for (v, want) in [
            ("300", Some(300)),
            ("4194304", Some(4_194_304)),
            ("123456", Some(123_456)),
            ("299", None),
            ("4194305", None),
            ("9999999", None),
            ("10000000", None),
            ("4294967296", None),
            ("", None),
            ("0", None),
            ("0300", None),
            ("+300", None),
            ("-300", None),
            (" 300", None),
            ("300 ", None),
            ("3e5", None),
            ("0x400", None),
            ("\u{ff13}00", None),
        ] {
            assert_eq!(check_pid_floor(v.as_bytes()).ok(), want, "{v:?}");
        }
    }

    #[test]
    fn generation_ids_follow_dumpers_rule() {
        use dumper::manifest::GenerationId;
        let long = "g".repeat(64);
        let too_long = "g".repeat(65);
        for id in [
            "g1",
            "20250101T000000Z-0123456789abcdef",
            "a.b_c-d",
            "A",
            "-x",
            "_",
            long.as_str(),
            too_long.as_str(),
            "",
            ".",
            "..",
            ".hidden",
            "../x",
            "a/b",
            "a b",
            "a\0b",
            "x;rm",
            "$(reboot)",
            "caf\u{e9}",
            "g1\n",
            "%2e%2e",
        ] {
            assert_eq!(
                check_generation(id.as_bytes()).is_ok(),
                GenerationId::new(id).is_ok(),
                "{id:?}"
            );
        }
        assert!(check_generation(b"\xff\xfe").is_err());
    }

    #[test]
    fn kmsg_lines_carry_a_priority_and_the_tag() {
        let dir = tempfile::tempdir().unwrap();
        let kmsg = dir.path().join("kmsg");
        fs::write(&kmsg, "").unwrap();
        let mut log = Log::open(&kmsg);
        assert!(matches!(log, Log::Kmsg(_)));
        log.info("hello");
        log.warn("careful");
        assert_eq!(
            fs::read_to_string(&kmsg).unwrap(),
            "<6>upgraded-initramfs-hook: hello\n<4>upgraded-initramfs-hook: careful\n"
        );
        assert!(matches!(
            Log::open(&dir.path().join("missing")),
            Log::Stderr
        ));
    }
}
