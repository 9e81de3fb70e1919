//! The kernel command line: writing the one the target kernel boots with, and reading
//! our arguments back from `/proc/cmdline` after the kexec.
//!
//! kexec hands the new kernel nothing but what is reserved in memory and its command
//! line, so the command line tells the initramfs and the daemon which generation to
//! restore (`upgraded.generation=<id>`) and, optionally, the highest PID the restore
//! needs free (`upgraded.pid_floor=<N>`): the initramfs hook moves the PID counter past
//! it before boot services take PIDs that CRIU must give back to restored processes
//! (CRIU restores PIDs as they were; a taken one fails the restore, criu#1716). The
//! reading side runs early in boot as root and must never be steered by a malformed
//! argument: anything it does not fully understand is ignored with a warning.
//!
//! Arguments are split the way the kernel splits them (`next_arg` in lib/cmdline.c):
//! at whitespace outside double quotes, where whitespace includes byte 0xA0, a quote
//! anywhere toggles quoting, and `--` ends the kernel's parameters (what follows is
//! for init).

use dumper::manifest::GenerationId;
use std::fmt;

use super::error::{shown, shown_bytes, KernelError, Result};

/// Our arguments' common prefix.
pub const PREFIX: &str = "upgraded.";
/// The argument that names the generation to restore.
pub const GENERATION_KEY: &str = "upgraded.generation";
/// The argument that names the highest PID the restore needs free.
pub const PID_FLOOR_KEY: &str = "upgraded.pid_floor";
/// The lowest PID floor: RESERVED_PIDS, below which the kernel never hands out PIDs
/// again once the counter has wrapped. A floor below it reserves nothing useful.
pub const MIN_PID_FLOOR: u32 = 300;
/// The highest PID floor: PID_MAX_LIMIT on 64-bit Linux, the largest `pid_max`.
pub const MAX_PID_FLOOR: u32 = 4_194_304;
/// Longest command line the target kernel takes: x86's COMMAND_LINE_SIZE is 2048
/// bytes with the terminating NUL.
pub const MAX_CMDLINE_LEN: usize = 2047;
/// Warnings kept by [`parse_upgraded_tokens`]; a hostile command line with thousands
/// of bad arguments must not flood the journal. The rest are only counted.
pub const MAX_WARNINGS: usize = 16;

// --- splitting, as the kernel does ------------------------------------------------------

/// The kernel's `isspace` (lib/ctype.c): ASCII whitespace with \v, and Latin-1's
/// non-breaking space 0xA0.
fn is_kernel_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0xa0)
}

/// One argument as the kernel splits it.
#[derive(Debug, Clone, Copy)]
struct RawArg<'a> {
    raw: &'a [u8],
    /// An opening quote was never closed: the kernel ran the argument to the end.
    unbalanced: bool,
}

/// Splits like `next_arg`, and says whether any argument boundary fell on byte 0xA0
/// (which, in UTF-8 text, is inside a character).
fn split_args(cmdline: &[u8]) -> (Vec<RawArg<'_>>, bool) {
    let mut args = Vec::new();
    let mut split_at_a0 = false;
    let mut i = 0;
    while i < cmdline.len() {
        if is_kernel_space(cmdline[i]) {
            split_at_a0 |= cmdline[i] == 0xa0;
            i += 1;
            continue;
        }
        let start = i;
        let mut in_quote = false;
        while i < cmdline.len() && (in_quote || !is_kernel_space(cmdline[i])) {
            if cmdline[i] == b'"' {
                in_quote = !in_quote;
            }
            i += 1;
        }
        args.push(RawArg {
            raw: &cmdline[start..i],
            unbalanced: in_quote,
        });
    }
    (args, split_at_a0)
}

/// An argument's name and value as the kernel sees them, quotes removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Param<'a> {
    key: &'a [u8],
    value: Option<&'a [u8]>,
    /// The argument or its value was in quotes.
    quoted: bool,
}

/// `next_arg`'s split of one argument: a leading quote is dropped, the name runs to
/// the first '=' (not counting one in first place), a value's leading quote is dropped,
/// and so is a trailing quote that closes either.
fn param(raw: &[u8]) -> Param<'_> {
    let quoted = raw.first() == Some(&b'"');
    let body = if quoted { &raw[1..] } else { raw };
    let ends_in_quote = body.last() == Some(&b'"');
    let equals = body
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, &c)| c == b'=')
        .map(|(i, _)| i);
    match equals {
        None => {
            let key = if quoted && ends_in_quote {
                &body[..body.len() - 1]
            } else {
                body
            };
            Param {
                key,
                value: None,
                quoted,
            }
        }
        Some(eq) => {
            let mut value = &body[eq + 1..];
            let value_quoted = value.first() == Some(&b'"');
            if value_quoted {
                value = &value[1..];
            }
            if (value_quoted || quoted) && ends_in_quote && !value.is_empty() {
                value = &value[..value.len() - 1];
            }
            Param {
                key: &body[..eq],
                value: Some(value),
                quoted: quoted || value_quoted,
            }
        }
    }
}

impl Param<'_> {
    /// `--` without a value: the kernel's parameters end here.
    fn is_separator(&self) -> bool {
        self.key == b"--" && self.value.is_none()
    }

    fn is_ours(&self) -> bool {
        self.key.starts_with(PREFIX.as_bytes())
    }
}

// --- writing ------------------------------------------------------------------------------

/// The command line for the target kernel: the `current` one (as read from
/// `/proc/cmdline`) without our old arguments, the bootloader's `BOOT_IMAGE=` and
/// `initrd=` (they name the old kernel's files; kexec passes the initramfs itself) and,
/// when `memmap` is given, without other persistent-memory reservations (`memmap=…!…`),
/// since ours replaces them; then `upgraded.generation=<generation>`,
/// `upgraded.pid_floor=<pid_floor>` when given, `memmap=<memmap>` and the admin's
/// `extra` arguments. Every old `upgraded.*` argument is dropped, so a floor of an
/// earlier upgrade never survives into one that gives none.
///
/// `pid_floor` must be in [`MIN_PID_FLOOR`]`..=`[`MAX_PID_FLOOR`].
///
/// An argument of `current` that equals one of `extra` is dropped there, as it is
/// appended again: repeated upgrades do not accumulate the extras.
///
/// Arguments after `--` are init's: they stay after `--`, and ours go before it.
/// `memmap=` entries that reserve memory for other reasons (`$`, `#`, `@`, `exactmap`)
/// are kept: dropping a bad-RAM reservation would be worse than a duplicate.
pub fn target_cmdline(
    current: &str,
    generation: &str,
    pid_floor: Option<u32>,
    extra: &[String],
    memmap: Option<&str>,
) -> Result<String> {
    let generation = GenerationId::new(generation).map_err(|e| KernelError::InvalidGeneration {
        id: shown(generation),
        reason: e.reason,
    })?;
    if let Some(floor) = pid_floor {
        check_pid_floor(floor)?;
    }
    if let Some(memmap) = memmap {
        check_memmap(memmap)?;
    }
    for arg in extra {
        if let Some(reason) = extra_arg_problem(arg, memmap.is_some()) {
            return Err(KernelError::InvalidExtraArg {
                arg: shown(arg),
                reason,
            });
        }
    }

    let (args, split_at_a0) = split_args(current.as_bytes());
    let unusable = |raw: &[u8], reason: &str| KernelError::UnusableCmdline {
        token: shown_bytes(raw),
        reason: reason.to_owned(),
    };
    if split_at_a0 {
        // Re-joining the arguments with spaces would change those characters.
        return Err(unusable(
            current.as_bytes(),
            "it contains a non-ASCII character with byte 0xA0, where the kernel splits \
             arguments",
        ));
    }

    let mut kernel_part: Vec<String> = Vec::new();
    let mut init_part: Option<Vec<String>> = None;
    for arg in &args {
        if arg.raw.contains(&0) {
            return Err(unusable(arg.raw, "it contains a NUL byte"));
        }
        if arg.unbalanced {
            // Anything appended would end up inside the quotes.
            return Err(unusable(arg.raw, "a double quote is not closed"));
        }
        // Splits happen at ASCII bytes only (0xA0 was refused), so every argument of a
        // `&str` is valid UTF-8.
        let text =
            std::str::from_utf8(arg.raw).map_err(|_| unusable(arg.raw, "it is not valid UTF-8"))?;
        let p = param(arg.raw);
        if p.is_ours() {
            continue;
        }
        if let Some(init_args) = init_part.as_mut() {
            init_args.push(text.to_owned());
            continue;
        }
        if p.is_separator() {
            init_part = Some(vec![text.to_owned()]);
            continue;
        }
        // The extras are appended again below; without this, every upgrade from a
        // kernel that was itself booted by upgraded would add them once more.
        if extra.iter().any(|e| e.as_bytes() == arg.raw) {
            continue;
        }
        match p.key {
            b"BOOT_IMAGE" | b"initrd" => continue,
            b"memmap" if memmap.is_some() => {
                if let Some(kept) = memmap_without_pmem(&p, text) {
                    kernel_part.push(kept);
                }
            }
            _ => kernel_part.push(text.to_owned()),
        }
    }

    kernel_part.push(format!("{GENERATION_KEY}={generation}"));
    if let Some(floor) = pid_floor {
        kernel_part.push(format!("{PID_FLOOR_KEY}={floor}"));
    }
    if let Some(memmap) = memmap {
        kernel_part.push(format!("memmap={memmap}"));
    }
    kernel_part.extend(extra.iter().cloned());
    kernel_part.extend(init_part.unwrap_or_default());

    let line = kernel_part.join(" ");
    if line.len() > MAX_CMDLINE_LEN {
        return Err(KernelError::CmdlineTooLong {
            len: line.len(),
            max: MAX_CMDLINE_LEN,
        });
    }
    Ok(line)
}

/// A current `memmap=` argument with its persistent-memory entries (`<size>!<offset>`)
/// removed, or `None` when nothing is left. The kernel reads comma-separated entries.
fn memmap_without_pmem(p: &Param<'_>, text: &str) -> Option<String> {
    let Some(value) = p.value else {
        return Some(text.to_owned());
    };
    let value = String::from_utf8_lossy(value);
    if !value.contains('!') {
        return Some(text.to_owned());
    }
    let kept: Vec<&str> = value.split(',').filter(|e| !e.contains('!')).collect();
    if kept.is_empty() {
        None
    } else {
        Some(format!("memmap={}", kept.join(",")))
    }
}

/// Why `arg` cannot be added to the command line, or `None`.
fn extra_arg_problem(arg: &str, own_memmap: bool) -> Option<String> {
    if arg.is_empty() {
        return Some("is empty".into());
    }
    if let Some(c) = arg.chars().find(|c| !c.is_ascii()) {
        return Some(format!(
            "contains the non-ASCII character '{c}'; the kernel splits arguments at byte \
             0xA0, which such characters may contain"
        ));
    }
    if arg.chars().any(|c| c.is_ascii_whitespace() || c == '\x0b') {
        return Some("contains whitespace; give each argument as its own element".into());
    }
    if arg.chars().any(|c| c.is_ascii_control()) {
        return Some("contains a control character".into());
    }
    if arg.contains(['"', '\'']) {
        return Some(
            "contains a quote; arguments are passed as they are, so values with spaces \
             cannot be given"
                .into(),
        );
    }
    if arg == "--" {
        return Some("would end the kernel's parameters and pass the rest to init".into());
    }
    let p = param(arg.as_bytes());
    if p.is_ours() {
        return Some(format!(
            "the {PREFIX}* arguments are upgraded's own and set by it"
        ));
    }
    if p.key == b"initrd" {
        return Some("the initramfs is handed to kexec, not named on the command line".into());
    }
    if own_memmap && p.key == b"memmap" && arg.contains('!') {
        return Some(
            "reserves persistent memory, which would clash with the area's own memmap; \
             set area.memmap instead"
                .into(),
        );
    }
    None
}

/// Checks a PID floor for `upgraded.pid_floor=`: [`MIN_PID_FLOOR`] to
/// [`MAX_PID_FLOOR`].
pub fn check_pid_floor(floor: u32) -> Result<()> {
    if (MIN_PID_FLOOR..=MAX_PID_FLOOR).contains(&floor) {
        Ok(())
    } else {
        Err(KernelError::InvalidPidFloor {
            value: floor,
            min: MIN_PID_FLOOR,
            max: MAX_PID_FLOOR,
        })
    }
}

/// Checks a `memmap=` value reserving persistent memory: `<size>!<offset>`, numbers as
/// the kernel's `memparse` reads them.
pub fn check_memmap(value: &str) -> Result<()> {
    let refuse = |reason: String| KernelError::InvalidMemmap {
        value: shown(value),
        reason,
    };
    if value.starts_with("memmap=") {
        return Err(refuse("give the value without \"memmap=\"".into()));
    }
    let Some((size, offset)) = value.split_once('!') else {
        return Err(refuse("has no '!' between size and offset".into()));
    };
    let size = memparse(size).map_err(|e| refuse(format!("size: {e}")))?;
    let offset = memparse(offset).map_err(|e| refuse(format!("offset: {e}")))?;
    if size == 0 {
        return Err(refuse("the size is zero".into()));
    }
    if offset.checked_add(size).is_none() {
        return Err(refuse("offset plus size is past the end of memory".into()));
    }
    Ok(())
}

/// A number as the kernel's `memparse` reads it, with a K/M/G/T/P/E suffix. Leading
/// zeros are refused: the kernel would read `0512M` as octal.
fn memparse(s: &str) -> std::result::Result<u64, String> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    let (number, suffix) = digits.split_at(end);
    if number.is_empty() {
        return Err(format!("{} is not a number", shown(s)));
    }
    if radix == 10 && number.len() > 1 && number.starts_with('0') {
        return Err(format!(
            "{} has a leading zero, which the kernel reads as octal",
            shown(s)
        ));
    }
    let n = u64::from_str_radix(number, radix).map_err(|_| format!("{} is too large", shown(s)))?;
    let shift = match suffix {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        "P" | "p" => 50,
        "E" | "e" => 60,
        _ => return Err(format!("{} has an unknown suffix", shown(s))),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{} is too large", shown(s)))
}

// --- reading ------------------------------------------------------------------------------

/// What the booted kernel's command line says to upgraded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpgradedArgs {
    /// The generation to restore, when exactly one valid `upgraded.generation=` was
    /// given.
    pub generation: Option<GenerationId>,
    /// The highest PID the restore needs free, when exactly one valid
    /// `upgraded.pid_floor=` was given: decimal digits without sign or leading zero,
    /// [`MIN_PID_FLOOR`] to [`MAX_PID_FLOOR`]. Read independently of the generation.
    pub pid_floor: Option<u32>,
    /// Our arguments that were ignored, and why (at most [`MAX_WARNINGS`]).
    pub warnings: Vec<CmdlineWarning>,
    /// Further ignored arguments, not described.
    pub suppressed_warnings: usize,
}

/// An `upgraded.*` argument that was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineWarning {
    /// The argument, escaped, quoted and cut short.
    pub token: String,
    pub problem: WarningKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    /// Not an argument upgraded knows.
    UnknownKey,
    /// `upgraded.generation` or `upgraded.pid_floor` without `=<value>`.
    MissingValue,
    /// The id is not a valid generation id.
    InvalidGeneration { reason: String },
    /// The value of `upgraded.pid_floor` is not a decimal number in
    /// [`MIN_PID_FLOOR`]`..=`[`MAX_PID_FLOOR`].
    InvalidPidFloor { reason: String },
    /// Quoted: upgraded never writes its arguments in quotes.
    Quoted,
    /// A double quote is not closed, so the argument ran to the end of the line.
    UnbalancedQuote,
    /// After `--`, where arguments belong to init, not the kernel.
    AfterSeparator,
    /// The argument named by the warning's token (`upgraded.generation` or
    /// `upgraded.pid_floor`) given `count` times: which one is meant is unclear.
    Duplicate { count: usize },
}

impl fmt::Display for CmdlineWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ignored kernel argument {}: ", self.token)?;
        match &self.problem {
            WarningKind::UnknownKey => f.write_str("upgraded knows no such argument"),
            WarningKind::MissingValue => f.write_str("it needs =<value>"),
            WarningKind::InvalidGeneration { reason } => {
                write!(f, "not a valid generation id: {reason}")
            }
            WarningKind::InvalidPidFloor { reason } => {
                write!(f, "not a valid PID floor: {reason}")
            }
            WarningKind::Quoted => f.write_str("upgraded writes its arguments without quotes"),
            WarningKind::UnbalancedQuote => f.write_str("an opening double quote is never closed"),
            WarningKind::AfterSeparator => {
                f.write_str("it comes after \"--\", so it is an argument for init")
            }
            WarningKind::Duplicate { count } => write!(
                f,
                "given {count} times and it is unclear which one is meant, so none is used"
            ),
        }
    }
}

impl UpgradedArgs {
    fn warn(&mut self, raw: &[u8], problem: WarningKind) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(CmdlineWarning {
                token: shown_bytes(raw),
                problem,
            });
        } else {
            self.suppressed_warnings += 1;
        }
    }
}

/// Reads our arguments from a command line (the contents of `/proc/cmdline`). Never
/// fails: what is malformed is reported in `warnings` and otherwise ignored, and the
/// generation and the PID floor are each set only when given once and valid.
pub fn parse_upgraded_tokens(cmdline: &str) -> UpgradedArgs {
    let mut out = UpgradedArgs::default();
    let (args, _) = split_args(cmdline.as_bytes());
    let mut generations: Vec<Option<GenerationId>> = Vec::new();
    let mut floors: Vec<Option<u32>> = Vec::new();
    let mut after_separator = false;
    for arg in &args {
        let p = param(arg.raw);
        if !after_separator && p.is_separator() {
            after_separator = true;
            continue;
        }
        if !p.is_ours() {
            continue;
        }
        if after_separator {
            out.warn(arg.raw, WarningKind::AfterSeparator);
            continue;
        }
        // Every argument of a key counts towards duplicates, valid or not: with two,
        // the one that looks valid may be the stale or planted one.
        if p.key == GENERATION_KEY.as_bytes() {
            let id = generation_of(&mut out, arg, &p);
            generations.push(id);
        } else if p.key == PID_FLOOR_KEY.as_bytes() {
            let floor = pid_floor_of(&mut out, arg, &p);
            floors.push(floor);
        } else {
            out.warn(arg.raw, WarningKind::UnknownKey);
        }
    }
    out.generation = only_one(&mut out, GENERATION_KEY, generations);
    out.pid_floor = only_one(&mut out, PID_FLOOR_KEY, floors);
    out
}

/// The value of a key given exactly once, or `None` with a warning for duplicates.
fn only_one<T>(out: &mut UpgradedArgs, key: &str, mut values: Vec<Option<T>>) -> Option<T> {
    match values.len() {
        0 => None,
        1 => values.pop().flatten(),
        count => {
            out.warn(key.as_bytes(), WarningKind::Duplicate { count });
            None
        }
    }
}

/// The unquoted value of one of our arguments, or `None` with a warning.
fn value_of<'a>(out: &mut UpgradedArgs, arg: &RawArg<'_>, p: &Param<'a>) -> Option<&'a [u8]> {
    if arg.unbalanced {
        out.warn(arg.raw, WarningKind::UnbalancedQuote);
        return None;
    }
    if p.quoted {
        out.warn(arg.raw, WarningKind::Quoted);
        return None;
    }
    if p.value.is_none() {
        out.warn(arg.raw, WarningKind::MissingValue);
    }
    p.value
}

fn generation_of(out: &mut UpgradedArgs, arg: &RawArg<'_>, p: &Param<'_>) -> Option<GenerationId> {
    let value = value_of(out, arg, p)?;
    let checked = std::str::from_utf8(value)
        .map_err(|_| "it is not valid UTF-8".to_string())
        .and_then(|v| GenerationId::new(v).map_err(|e| e.reason));
    match checked {
        Ok(id) => Some(id),
        Err(reason) => {
            out.warn(arg.raw, WarningKind::InvalidGeneration { reason });
            None
        }
    }
}

fn pid_floor_of(out: &mut UpgradedArgs, arg: &RawArg<'_>, p: &Param<'_>) -> Option<u32> {
    let value = value_of(out, arg, p)?;
    match parse_pid_floor(value) {
        Ok(floor) => Some(floor),
        Err(reason) => {
            out.warn(arg.raw, WarningKind::InvalidPidFloor { reason });
            None
        }
    }
}

/// A PID floor as upgraded writes it: ASCII decimal digits only (no sign, no spaces,
/// no `0x`, no leading zero), in [`MIN_PID_FLOOR`]`..=`[`MAX_PID_FLOOR`].
fn parse_pid_floor(value: &[u8]) -> std::result::Result<u32, String> {
    if value.is_empty() {
        return Err("the value is empty".into());
    }
    if let Some(&c) = value.iter().find(|c| !c.is_ascii_digit()) {
        let shown = if c.is_ascii_graphic() {
            format!("'{}'", c as char)
        } else {
            format!("byte 0x{c:02x}")
        };
        return Err(format!(
            "contains {shown}, but only the digits 0-9 are allowed"
        ));
    }
    if value.len() > 1 && value[0] == b'0' {
        return Err("has a leading zero".into());
    }
    let out_of_range = || format!("is outside {MIN_PID_FLOOR}..={MAX_PID_FLOOR}");
    // Digits only and at most 10 of them: fits in a u64 without overflow.
    if value.len() > 10 {
        return Err(out_of_range());
    }
    let n: u64 = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(out_of_range)?;
    match u32::try_from(n) {
        Ok(n) if (MIN_PID_FLOOR..=MAX_PID_FLOOR).contains(&n) => Ok(n),
        _ => Err(out_of_range()),
    }
}

/// A RAM range a command line reserves as persistent memory: one `<size>!<offset>`
/// entry of a `memmap=` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmemReservation {
    pub size: u64,
    pub offset: u64,
    /// The entry as written, e.g. `512M!1G`.
    pub text: String,
}

/// The persistent-memory reservations (`memmap=<size>!<offset>`, comma-separated
/// entries included) of a command line, such as `/proc/cmdline`: the ranges the
/// kernel that booted with it made pmem regions of. Numbers are read as the kernel's
/// `memparse` reads them (`0x` hex, K to E suffixes); an entry it would not take, and
/// arguments after `--` (init's), are left out.
pub fn pmem_reservations(cmdline: &str) -> Vec<PmemReservation> {
    let (args, _) = split_args(cmdline.as_bytes());
    let mut out = Vec::new();
    for arg in &args {
        let p = param(arg.raw);
        if p.is_separator() {
            break;
        }
        let (b"memmap", Some(value)) = (p.key, p.value) else {
            continue;
        };
        let value = String::from_utf8_lossy(value);
        for entry in value.split(',') {
            let Some((size, offset)) = entry.split_once('!') else {
                continue;
            };
            if let (Ok(size), Ok(offset)) = (memparse(size), memparse(offset)) {
                out.push(PmemReservation {
                    size,
                    offset,
                    text: entry.to_owned(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const DEBIAN: &str = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-amd64 root=UUID=0b4b5d6e-1c1f-4c3a-9d1e-2f3a4b5c6d7e ro quiet\n";

    // --- splitting ---

    fn split(s: &str) -> Vec<String> {
        split_args(s.as_bytes())
            .0
            .iter()
            .map(|a| String::from_utf8_lossy(a.raw).into_owned())
            .collect()
    }

    #[test]
    fn splits_like_the_kernel() {
        assert_eq!(split("  a  b\tc\n"), ["a", "b", "c"]);
        assert_eq!(split("foo=\"a b\" bar"), ["foo=\"a b\"", "bar"]);
        assert_eq!(split("\"quoted arg\" x"), ["\"quoted arg\"", "x"]);
        assert_eq!(split("a=\"x\"y\" z\""), ["a=\"x\"y\" z\""]);
        assert_eq!(split("a\x0bb\x0cc\rd"), ["a", "b", "c", "d"]);
        assert!(split("").is_empty());
        assert!(split(" \n").is_empty());
        let (args, _) = split_args(b"a \"b c");
        assert!(args[1].unbalanced);
        // 0xA0 splits, as in the kernel's ctype table.
        let (args, at_a0) = split_args(b"a\xa0b");
        assert_eq!(args.len(), 2);
        assert!(at_a0);
    }

    #[test]
    fn params_lose_their_quotes_like_the_kernel() {
        let p = param(b"foo=\"a b\"");
        assert_eq!(
            (p.key, p.value, p.quoted),
            (&b"foo"[..], Some(&b"a b"[..]), true)
        );
        let p = param(b"\"foo=bar\"");
        assert_eq!((p.key, p.value), (&b"foo"[..], Some(&b"bar"[..])));
        let p = param(b"\"quiet\"");
        assert_eq!((p.key, p.value), (&b"quiet"[..], None));
        let p = param(b"quiet");
        assert_eq!((p.key, p.value, p.quoted), (&b"quiet"[..], None, false));
        let p = param(b"a=b=c");
        assert_eq!((p.key, p.value), (&b"a"[..], Some(&b"b=c"[..])));
        let p = param(b"=x");
        assert_eq!((p.key, p.value), (&b"=x"[..], None));
        let p = param(b"k=\"");
        assert_eq!(p.value, Some(&b""[..]));
        assert!(param(b"--").is_separator());
        assert!(!param(b"--=x").is_separator());
    }

    // --- writing ---

    #[test]
    fn debian_cmdline_gets_our_generation() {
        let line = target_cmdline(DEBIAN, "g-20250101", None, &[], None).unwrap();
        assert_eq!(
            line,
            "root=UUID=0b4b5d6e-1c1f-4c3a-9d1e-2f3a4b5c6d7e ro quiet upgraded.generation=g-20250101"
        );
    }

    #[test]
    fn old_upgraded_arguments_are_replaced_not_repeated() {
        let current =
            "root=/dev/vda1 upgraded.generation=old upgraded.foo \"upgraded.generation=q\" ro";
        let line = target_cmdline(current, "new", None, &[], None).unwrap();
        assert_eq!(line, "root=/dev/vda1 ro upgraded.generation=new");
        assert_eq!(line.matches("upgraded.").count(), 1);
    }

    #[test]
    fn bootloader_arguments_are_dropped() {
        let current = "BOOT_IMAGE=(hd0,gpt2)/vmlinuz initrd=\\initrd.img initrd=/x ro";
        assert_eq!(
            target_cmdline(current, "g1", None, &[], None).unwrap(),
            "ro upgraded.generation=g1"
        );
    }

    #[test]
    fn quoted_values_stay_single_arguments() {
        let current = "root=/dev/vda1 foo=\"a b\" \"x y\" dyndbg=\"file a.c +p\"";
        let line = target_cmdline(current, "g1", None, &[], None).unwrap();
        assert_eq!(
            line,
            "root=/dev/vda1 foo=\"a b\" \"x y\" dyndbg=\"file a.c +p\" upgraded.generation=g1"
        );
        let again = target_cmdline(&line, "g2", None, &[], None).unwrap();
        assert_eq!(again, line.replace("g1", "g2"));
    }

    #[test]
    fn memmap_is_replaced_only_when_we_add_ours() {
        let current = "root=/dev/vda1 memmap=512M!1G ro";
        assert_eq!(
            target_cmdline(current, "g1", None, &[], None).unwrap(),
            "root=/dev/vda1 memmap=512M!1G ro upgraded.generation=g1"
        );
        assert_eq!(
            target_cmdline(current, "g1", None, &[], Some("256M!1G")).unwrap(),
            "root=/dev/vda1 ro upgraded.generation=g1 memmap=256M!1G"
        );
        let line = target_cmdline(current, "g1", None, &[], Some("512M!1G")).unwrap();
        assert_eq!(line.matches("memmap=").count(), 1, "{line}");
    }

    #[test]
    fn memmap_reservations_of_other_kinds_are_kept() {
        // A bad-RAM reservation ($) stays; only the pmem entry (!) is replaced.
        let current = "memmap=64K$0x18690000 memmap=512M!1G,4K$0x1000 memmap=exactmap ro";
        assert_eq!(
            target_cmdline(current, "g1", None, &[], Some("512M!2G")).unwrap(),
            "memmap=64K$0x18690000 memmap=4K$0x1000 memmap=exactmap ro upgraded.generation=g1 memmap=512M!2G"
        );
    }

    #[test]
    fn ours_go_before_init_arguments() {
        let current = "root=/dev/vda1 ro -- --init-flag upgraded.generation=stale single";
        assert_eq!(
            target_cmdline(current, "g1", None, &strings(&["nokaslr"]), Some("512M!1G")).unwrap(),
            "root=/dev/vda1 ro upgraded.generation=g1 memmap=512M!1G nokaslr -- --init-flag single"
        );
        // After "--", kernel-looking arguments are init's and stay as they are.
        let current = "ro -- initrd=/x memmap=1G!1G";
        assert_eq!(
            target_cmdline(current, "g1", None, &[], Some("512M!1G")).unwrap(),
            "ro upgraded.generation=g1 memmap=512M!1G -- initrd=/x memmap=1G!1G"
        );
    }

    #[test]
    fn extras_come_last_in_order() {
        let line = target_cmdline(
            "ro",
            "g1",
            None,
            &strings(&["console=ttyS0,115200", "nokaslr", "loglevel=7"]),
            None,
        )
        .unwrap();
        assert_eq!(
            line,
            "ro upgraded.generation=g1 console=ttyS0,115200 nokaslr loglevel=7"
        );
    }

    #[test]
    fn extras_do_not_pile_up_over_upgrades() {
        let extra = strings(&["nokaslr", "loglevel=4"]);
        let first = target_cmdline("ro loglevel=7", "g1", None, &extra, None).unwrap();
        assert_eq!(
            first,
            "ro loglevel=7 upgraded.generation=g1 nokaslr loglevel=4"
        );
        let second = target_cmdline(&first, "g2", None, &extra, None).unwrap();
        assert_eq!(second, first.replace("g1", "g2"));
        let third = target_cmdline(&second, "g3", None, &extra, None).unwrap();
        assert_eq!(third, first.replace("g1", "g3"));
    }

    #[test]
    fn bad_extras_are_refused_with_the_reason() {
        for (arg, why) in [
            ("", "empty"),
            ("a b", "whitespace"),
            ("a\tb", "whitespace"),
            ("a\nb", "whitespace"),
            ("a\x0bb", "whitespace"),
            ("a\x01b", "control"),
            ("a\0b", "control"),
            ("foo=\"x\"", "quote"),
            ("foo='x'", "quote"),
            ("caf\u{e9}", "non-ASCII"),
            ("--", "init"),
            ("upgraded.generation=x", "upgraded's own"),
            ("upgraded.anything", "upgraded's own"),
            ("initrd=/boot/initrd.img", "initramfs"),
        ] {
            let err = target_cmdline("ro", "g1", None, &strings(&[arg]), None).unwrap_err();
            assert!(
                matches!(err, KernelError::InvalidExtraArg { .. }),
                "{arg:?}: {err}"
            );
            assert!(err.to_string().contains(why), "{arg:?}: {err}");
        }
        // A pmem memmap among the extras clashes with ours, not otherwise.
        let extra = strings(&["memmap=1G!4G"]);
        assert!(target_cmdline("ro", "g1", None, &extra, Some("512M!1G")).is_err());
        assert!(target_cmdline("ro", "g1", None, &extra, None).is_ok());
        let bad_ram = strings(&["memmap=64K$0x1000"]);
        assert!(target_cmdline("ro", "g1", None, &bad_ram, Some("512M!1G")).is_ok());
    }

    #[test]
    fn generation_ids_are_checked() {
        for bad in [
            "",
            ".hidden",
            "..",
            "../../etc",
            "a/b",
            "a b",
            "a\0b",
            "x;rm",
        ] {
            let err = target_cmdline("ro", bad, None, &[], None).unwrap_err();
            assert!(
                matches!(err, KernelError::InvalidGeneration { .. }),
                "{bad:?}: {err}"
            );
        }
        assert!(target_cmdline("ro", &"g".repeat(65), None, &[], None).is_err());
        assert!(target_cmdline("ro", &"g".repeat(64), None, &[], None).is_ok());
        assert!(target_cmdline("ro", "2025-01-01T10.00_x", None, &[], None).is_ok());
    }

    #[test]
    fn memmap_values_are_checked() {
        for ok in [
            "512M!1G",
            "0x20000000!0x40000000",
            "1g!4g",
            "4096!0",
            "1T!1T",
        ] {
            check_memmap(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("memmap=512M!1G", "without"),
            ("512M", "no '!'"),
            ("512M$1G", "no '!'"),
            ("0!1G", "zero"),
            ("!1G", "not a number"),
            ("512M!", "not a number"),
            ("512X!1G", "suffix"),
            ("0512M!1G", "octal"),
            ("512M!1G!2G", "suffix"),
            ("99999999999999999999!1G", "too large"),
            ("16E!1G", "too large"),
            ("8E!8E", "past the end"),
            ("512 M!1G", "suffix"),
        ] {
            let err = check_memmap(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad:?}: {err}");
        }
        assert!(target_cmdline("ro", "g1", None, &[], Some("512M")).is_err());
    }

    #[test]
    fn unusable_current_lines_are_refused() {
        let err = target_cmdline("ro foo=\"unclosed", "g1", None, &[], None).unwrap_err();
        assert!(err.to_string().contains("not closed"), "{err}");
        let err = target_cmdline("ro a\0b", "g1", None, &[], None).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        // U+00E0 is C3 A0 in UTF-8: the kernel splits inside it.
        let err = target_cmdline("ro x\u{e0}upgraded.generation=evil", "g1", None, &[], None)
            .unwrap_err();
        assert!(err.to_string().contains("0xA0"), "{err}");
        // Non-ASCII without byte 0xA0 is carried over.
        assert_eq!(
            target_cmdline("label=caf\u{e9}", "g1", None, &[], None).unwrap(),
            "label=caf\u{e9} upgraded.generation=g1"
        );
    }

    #[test]
    fn too_long_lines_are_refused() {
        let current = format!("ro big={}", "x".repeat(2030));
        let err = target_cmdline(&current, "g1", None, &[], None).unwrap_err();
        assert!(
            matches!(err, KernelError::CmdlineTooLong { max: 2047, .. }),
            "{err}"
        );
        let fits = format!("big={}", "x".repeat(MAX_CMDLINE_LEN - 4 - 23));
        let line = target_cmdline(&fits, "g1", None, &[], None).unwrap();
        assert_eq!(line.len(), MAX_CMDLINE_LEN);
    }

    #[test]
    fn written_lines_read_back() {
        let line = target_cmdline(
            DEBIAN,
            "g-42",
            None,
            &strings(&["nokaslr"]),
            Some("512M!1G"),
        )
        .unwrap();
        let args = parse_upgraded_tokens(&line);
        assert_eq!(args.generation.unwrap().as_str(), "g-42");
        assert!(args.warnings.is_empty());
    }

    #[test]
    fn pid_floor_goes_next_to_the_generation() {
        let line = target_cmdline(
            DEBIAN,
            "g1",
            Some(123_456),
            &strings(&["nokaslr"]),
            Some("512M!1G"),
        )
        .unwrap();
        assert_eq!(
            line,
            "root=UUID=0b4b5d6e-1c1f-4c3a-9d1e-2f3a4b5c6d7e ro quiet upgraded.generation=g1 \
             upgraded.pid_floor=123456 memmap=512M!1G nokaslr"
        );
        let args = parse_upgraded_tokens(&line);
        assert_eq!(args.generation.unwrap().as_str(), "g1");
        assert_eq!(args.pid_floor, Some(123_456));
        assert!(args.warnings.is_empty(), "{:?}", args.warnings);
    }

    #[test]
    fn old_pid_floors_are_dropped() {
        let current = "ro upgraded.generation=g1 upgraded.pid_floor=5000 quiet \
                       upgraded.pid_floor=junk \"upgraded.pid_floor=7\"";
        let replaced = target_cmdline(current, "g2", Some(9000), &[], None).unwrap();
        assert_eq!(
            replaced,
            "ro quiet upgraded.generation=g2 upgraded.pid_floor=9000"
        );
        // An upgrade without a floor does not inherit the last one.
        let without = target_cmdline(&replaced, "g3", None, &[], None).unwrap();
        assert_eq!(without, "ro quiet upgraded.generation=g3");
        // Nor do floors after "--" survive there (they are ours, even if misplaced).
        let line =
            target_cmdline("ro -- upgraded.pid_floor=400 x", "g4", Some(500), &[], None).unwrap();
        assert_eq!(
            line,
            "ro upgraded.generation=g4 upgraded.pid_floor=500 -- x"
        );
    }

    #[test]
    fn pid_floors_out_of_range_are_refused() {
        for bad in [0, 1, 299, MAX_PID_FLOOR + 1, u32::MAX] {
            let err = target_cmdline("ro", "g1", Some(bad), &[], None).unwrap_err();
            assert!(
                matches!(err, KernelError::InvalidPidFloor { value, .. } if value == bad),
                "{bad}: {err}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&bad.to_string()), "{msg}");
            assert!(msg.contains("300..=4194304"), "{msg}");
            assert!(check_pid_floor(bad).is_err());
        }
        for good in [MIN_PID_FLOOR, 301, 32_768, MAX_PID_FLOOR] {
            let line = target_cmdline("ro", "g1", Some(good), &[], None).unwrap();
            assert!(
                line.ends_with(&format!(" upgraded.pid_floor={good}")),
                "{line}"
            );
            assert_eq!(parse_upgraded_tokens(&line).pid_floor, Some(good));
        }
        // The generation is checked first, and a bad floor is refused with a good one.
        let err = target_cmdline("ro", "../x", Some(0), &[], None).unwrap_err();
        assert!(
            matches!(err, KernelError::InvalidGeneration { .. }),
            "{err}"
        );
    }

    #[test]
    fn the_floor_is_not_taken_from_the_extras() {
        let err = target_cmdline(
            "ro",
            "g1",
            None,
            &strings(&["upgraded.pid_floor=500"]),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, KernelError::InvalidExtraArg { .. }), "{err}");
    }

    // --- reading ---

    fn read(line: &str) -> UpgradedArgs {
        parse_upgraded_tokens(line)
    }

    #[test]
    fn reads_the_generation() {
        let args = read("BOOT_IMAGE=/vmlinuz ro upgraded.generation=g-20250101.1 quiet\n");
        assert_eq!(args.generation.unwrap().as_str(), "g-20250101.1");
        assert!(args.warnings.is_empty());
        assert_eq!(read("ro quiet"), UpgradedArgs::default());
        assert_eq!(read(""), UpgradedArgs::default());
    }

    fn single_warning(line: &str) -> CmdlineWarning {
        let args = read(line);
        assert_eq!(args.generation, None, "{line:?}");
        assert_eq!(args.warnings.len(), 1, "{line:?}: {:?}", args.warnings);
        args.warnings.into_iter().next().unwrap()
    }

    #[test]
    fn hostile_generation_values_are_ignored() {
        for line in [
            "upgraded.generation=../../etc",
            "upgraded.generation=/etc/shadow",
            "upgraded.generation=..",
            "upgraded.generation=.",
            "upgraded.generation=.tmp-x",
            "upgraded.generation=",
            "upgraded.generation=a\0b",
            "upgraded.generation=a;reboot",
            "upgraded.generation=$(reboot)",
            "upgraded.generation=g1\u{e9}",
            "upgraded.generation=%2e%2e",
        ] {
            let w = single_warning(line);
            assert!(
                matches!(w.problem, WarningKind::InvalidGeneration { .. }),
                "{line:?}: {w}"
            );
        }
        let w = single_warning("upgraded.generation=../../etc");
        let msg = w.to_string();
        assert!(msg.contains("../../etc"), "{msg}");
        assert!(msg.contains("not a valid generation id"), "{msg}");
    }

    #[test]
    fn huge_values_are_ignored_and_shown_short() {
        let line = format!("ro upgraded.generation={} quiet", "a".repeat(10 * 1024));
        let w = single_warning(&line);
        assert!(matches!(w.problem, WarningKind::InvalidGeneration { .. }));
        assert!(w.to_string().len() < 400, "{}", w.to_string().len());
        let key = format!("upgraded.{}=1", "k".repeat(10 * 1024));
        let w = single_warning(&key);
        assert_eq!(w.problem, WarningKind::UnknownKey);
        assert!(w.token.len() < 120);
    }

    #[test]
    fn missing_value_unknown_keys_and_quotes() {
        assert_eq!(
            single_warning("upgraded.generation").problem,
            WarningKind::MissingValue
        );
        assert_eq!(
            single_warning("upgraded.restore=yes").problem,
            WarningKind::UnknownKey
        );
        assert_eq!(single_warning("upgraded.").problem, WarningKind::UnknownKey);
        assert_eq!(
            single_warning("upgraded.Generation=g1").problem,
            WarningKind::UnknownKey
        );
        assert_eq!(
            single_warning("upgraded.generation=\"g1\"").problem,
            WarningKind::Quoted
        );
        assert_eq!(
            single_warning("\"upgraded.generation=g1\"").problem,
            WarningKind::Quoted
        );
        assert_eq!(
            single_warning("ro \"upgraded.generation=g1 quiet").problem,
            WarningKind::UnbalancedQuote
        );
        // An unknown key next to a good generation does not spoil it.
        let args = read("upgraded.generation=g1 upgraded.debug=1");
        assert_eq!(args.generation.unwrap().as_str(), "g1");
        assert_eq!(args.warnings.len(), 1);
    }

    #[test]
    fn two_generations_mean_none() {
        let args = read("upgraded.generation=g1 ro upgraded.generation=g2");
        assert_eq!(args.generation, None);
        assert_eq!(args.warnings.len(), 1);
        assert_eq!(
            args.warnings[0].problem,
            WarningKind::Duplicate { count: 2 }
        );
        assert!(args.warnings[0].to_string().contains("2 times"));
        // The same id twice is still ambiguous in origin: refused too.
        assert_eq!(
            read("upgraded.generation=g1 upgraded.generation=g1").generation,
            None
        );
        // A valid one next to an invalid one: neither is used.
        let args = read("upgraded.generation=g1 upgraded.generation=../x");
        assert_eq!(args.generation, None);
        assert_eq!(args.warnings.len(), 2);
    }

    #[test]
    fn arguments_after_the_separator_are_inits() {
        let args = read("ro -- upgraded.generation=g1");
        assert_eq!(args.generation, None);
        assert_eq!(args.warnings[0].problem, WarningKind::AfterSeparator);
        let args = read("ro upgraded.generation=g1 -- upgraded.generation=g2");
        assert_eq!(args.generation.unwrap().as_str(), "g1");
        assert_eq!(args.warnings.len(), 1);
    }

    #[test]
    fn lookalikes_are_not_ours() {
        let args = read("xupgraded.generation=g1 upgraded_generation=g2 UPGRADED.generation=g3");
        assert_eq!(args, UpgradedArgs::default());
    }

    #[test]
    fn whitespace_tricks_split_as_the_kernel_does() {
        // A tab or a vertical tab is a separator: the kernel sees two arguments.
        let args = read("foo\tupgraded.generation=g1");
        assert_eq!(args.generation.unwrap().as_str(), "g1");
        let args = read("foo\x0bupgraded.generation=g1");
        assert_eq!(args.generation.unwrap().as_str(), "g1");
        // Inside quotes, it is one argument that is not ours.
        assert_eq!(
            read("foo=\"x upgraded.generation=g1\""),
            UpgradedArgs::default()
        );
    }

    #[test]
    fn warnings_are_capped() {
        let line: Vec<String> = (0..1000).map(|i| format!("upgraded.k{i}=1")).collect();
        let args = read(&line.join(" "));
        assert_eq!(args.warnings.len(), MAX_WARNINGS);
        assert_eq!(args.suppressed_warnings, 1000 - MAX_WARNINGS);
    }

    #[test]
    fn reads_the_pid_floor() {
        let args = read("ro upgraded.generation=g1 upgraded.pid_floor=40000 quiet\n");
        assert_eq!(args.generation.unwrap().as_str(), "g1");
        assert_eq!(args.pid_floor, Some(40_000));
        assert!(args.warnings.is_empty());
        // Read independently of the generation: the caller decides what it means alone.
        let args = read("upgraded.pid_floor=300");
        assert_eq!(args.generation, None);
        assert_eq!(args.pid_floor, Some(300));
        assert_eq!(
            read("upgraded.pid_floor=4194304").pid_floor,
            Some(4_194_304)
        );
        assert_eq!(read("ro").pid_floor, None);
    }

    fn floor_warning(line: &str) -> CmdlineWarning {
        let args = read(line);
        assert_eq!(args.pid_floor, None, "{line:?}");
        assert_eq!(args.warnings.len(), 1, "{line:?}: {:?}", args.warnings);
        args.warnings.into_iter().next().unwrap()
    }

    #[test]
    fn hostile_pid_floors_are_ignored() {
        for (line, why) in [
            ("upgraded.pid_floor=", "empty"),
            ("upgraded.pid_floor=+500", "'+'"),
            ("upgraded.pid_floor=-500", "'-'"),
            ("upgraded.pid_floor=0x1000", "'x'"),
            ("upgraded.pid_floor=0X1000", "'X'"),
            ("upgraded.pid_floor=1e6", "'e'"),
            ("upgraded.pid_floor=500.0", "'.'"),
            ("upgraded.pid_floor=5_000", "'_'"),
            ("upgraded.pid_floor=500;reboot", "';'"),
            ("upgraded.pid_floor=$(reboot)", "'$'"),
            ("upgraded.pid_floor=500\0", "byte 0x00"),
            ("upgraded.pid_floor=50\u{e9}", "byte 0xc3"),
            // Fullwidth digits: is_numeric, not ASCII.
            ("upgraded.pid_floor=\u{ff15}\u{ff10}\u{ff10}", "byte 0xef"),
            ("upgraded.pid_floor=0", "outside"),
            ("upgraded.pid_floor=0500", "leading zero"),
            ("upgraded.pid_floor=00000000000000000000300", "leading zero"),
            ("upgraded.pid_floor=299", "outside 300..=4194304"),
            ("upgraded.pid_floor=4194305", "outside"),
            ("upgraded.pid_floor=4294967295", "outside"),
            ("upgraded.pid_floor=4294967296", "outside"),
            ("upgraded.pid_floor=18446744073709551616", "outside"),
            (
                "upgraded.pid_floor=99999999999999999999999999999999999999999",
                "outside",
            ),
            // The kernel splits at the space: the floor is "12", "34" is another argument.
            ("upgraded.pid_floor=12 34", "outside"),
        ] {
            let w = floor_warning(line);
            let WarningKind::InvalidPidFloor { reason } = &w.problem else {
                panic!("{line:?}: {w}");
            };
            assert!(reason.contains(why), "{line:?}: {reason}");
            let msg = w.to_string();
            assert!(msg.contains("not a valid PID floor"), "{msg}");
            assert!(msg.contains("upgraded.pid_floor"), "{msg}");
        }
        let huge = format!("upgraded.pid_floor={}", "9".repeat(100_000));
        let w = floor_warning(&huge);
        assert!(matches!(w.problem, WarningKind::InvalidPidFloor { .. }));
        assert!(w.to_string().len() < 400);
    }

    #[test]
    fn pid_floor_quotes_missing_values_and_lookalikes() {
        assert_eq!(
            floor_warning("upgraded.pid_floor").problem,
            WarningKind::MissingValue
        );
        assert!(floor_warning("upgraded.pid_floor")
            .to_string()
            .contains("=<value>"));
        assert_eq!(
            floor_warning("upgraded.pid_floor=\"500\"").problem,
            WarningKind::Quoted
        );
        assert_eq!(
            floor_warning("\"upgraded.pid_floor=500\"").problem,
            WarningKind::Quoted
        );
        assert_eq!(
            floor_warning("ro upgraded.pid_floor=\"500 quiet").problem,
            WarningKind::UnbalancedQuote
        );
        for unknown in [
            "upgraded.Pid_floor=500",
            "upgraded.pid_floors=500",
            "upgraded.pid-floor=500",
            "upgraded.pid_floor.x=500",
        ] {
            assert_eq!(
                floor_warning(unknown).problem,
                WarningKind::UnknownKey,
                "{unknown}"
            );
        }
        assert_eq!(
            read("xupgraded.pid_floor=500 upgraded_pid_floor=500 foo=\"upgraded.pid_floor=500\""),
            UpgradedArgs::default()
        );
        let args = read("ro -- upgraded.pid_floor=500");
        assert_eq!(args.pid_floor, None);
        assert_eq!(args.warnings[0].problem, WarningKind::AfterSeparator);
    }

    #[test]
    fn two_pid_floors_mean_none() {
        for line in [
            "upgraded.pid_floor=500 upgraded.pid_floor=600",
            "upgraded.pid_floor=500 upgraded.pid_floor=500",
        ] {
            let w = floor_warning(line);
            assert_eq!(w.problem, WarningKind::Duplicate { count: 2 });
            let msg = w.to_string();
            assert!(msg.contains("\"upgraded.pid_floor\""), "{msg}");
            assert!(msg.contains("2 times"), "{msg}");
        }
        // A valid one next to an invalid one: neither is used.
        let args = read("upgraded.pid_floor=500 upgraded.pid_floor=-1 upgraded.pid_floor");
        assert_eq!(args.pid_floor, None);
        assert_eq!(args.warnings.len(), 3);
        assert_eq!(
            args.warnings[2].problem,
            WarningKind::Duplicate { count: 3 }
        );
        // Duplicate floors do not spoil the generation, nor duplicate generations the floor.
        let args = read("upgraded.generation=g1 upgraded.pid_floor=500 upgraded.pid_floor=600");
        assert_eq!(args.generation.unwrap().as_str(), "g1");
        assert_eq!(args.pid_floor, None);
        let args = read("upgraded.generation=g1 upgraded.generation=g2 upgraded.pid_floor=500");
        assert_eq!(args.generation, None);
        assert_eq!(args.pid_floor, Some(500));
        assert!(args.warnings[0]
            .to_string()
            .contains("\"upgraded.generation\""));
    }

    #[test]
    fn pmem_reservations_are_read_as_the_kernel_reads_them() {
        let found = |line: &str| -> Vec<(u64, u64)> {
            pmem_reservations(line)
                .into_iter()
                .map(|r| (r.size, r.offset))
                .collect()
        };
        let (m, g) = (1u64 << 20, 1u64 << 30);
        assert_eq!(found("ro memmap=512M!1G quiet"), [(512 * m, g)]);
        assert_eq!(
            found("memmap=0x20000000!0x40000000"),
            [(512 * m, g)],
            "hex, as the kernel's memparse reads it"
        );
        // Other kinds of reservation in the same argument, and in others, are skipped.
        assert_eq!(
            found("memmap=64K$0x1000,1G!4G memmap=exactmap memmap=2G!8G"),
            [(g, 4 * g), (2 * g, 8 * g)]
        );
        assert_eq!(pmem_reservations("memmap=1G!4G")[0].text, "1G!4G");
        // Init's arguments, malformed entries and other keys are not reservations.
        assert_eq!(found("ro -- memmap=512M!1G"), []);
        assert_eq!(found("memmap=512X!1G memmap=!1G memmap xmemmap=1G!1G"), []);
        assert_eq!(found(""), []);
    }
}
