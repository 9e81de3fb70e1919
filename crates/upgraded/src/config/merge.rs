//! Applies fragments in order over the defaults and validates the result into
//! [`Settings`]. Values keep the location that set them until validation, so that an
//! error names the file and line of the value that is wrong, whichever file it came from.

use super::error::{ConfigError, Invalid, Location, PositionIndex};
use super::fragment::{Fragment, PreDumpValue, WorkloadFragment};
use super::settings::{
    AreaKind, AreaLocation, AreaSettings, BootSettings, HealthSettings, KernelSettings, KnownGood,
    PreDumps, RetentionSettings, Selector, Settings, SuspendCompression, SuspendSettings, Workload,
    WorkloadKind, DEFAULT_AREA_PATH, DEFAULT_SCRIPTS_DIR, DEFAULT_SUSPEND_KEY_FILE,
    DEFAULT_TMUX_SOCKET,
};
use super::validate::{self, Rejection};
use std::collections::HashMap;
use std::path::Path;
use toml::Spanned;

/// A value and where it was set.
#[derive(Debug, Clone)]
struct Located<T> {
    value: T,
    at: Location,
}

/// The file a fragment came from, to turn spans into locations.
struct Source<'a> {
    path: &'a Path,
    /// Every value is located, not only those that end up in an error: the index keeps
    /// that linear in the size of the file.
    index: PositionIndex<'a>,
}

impl Source<'_> {
    fn at(&self, offset: usize) -> Location {
        Location {
            path: self.path.to_path_buf(),
            position: Some(self.index.position(offset)),
        }
    }

    fn locate<T>(&self, spanned: Spanned<T>) -> Located<T> {
        let at = self.at(spanned.span().start);
        Located {
            value: spanned.into_inner(),
            at,
        }
    }

    fn locate_opt<T>(&self, spanned: Option<Spanned<T>>) -> Option<Located<T>> {
        spanned.map(|s| self.locate(s))
    }
}

/// Overwrites `slot` when the fragment sets the key: later files win.
fn set<T>(slot: &mut Option<Located<T>>, value: Option<Located<T>>) {
    if value.is_some() {
        *slot = value;
    }
}

/// One `[[workload]]` as written, with locations.
#[derive(Debug, Clone)]
struct WorkloadEntry {
    /// The `[[workload]]` header.
    at: Location,
    name: Option<Located<String>>,
    kind: Option<Located<WorkloadKind>>,
    pid: Option<Located<i64>>,
    unit: Option<Located<String>>,
    session: Option<Located<String>>,
    socket: Option<Located<String>>,
    screen: Option<Located<String>>,
    container: Option<Located<String>>,
    machine: Option<Located<String>>,
    check: Option<Located<Vec<String>>>,
    tcp_established: Option<Located<bool>>,
    pre_dump: Option<Located<PreDumpValue>>,
    leave_running: Option<Located<bool>>,
}

impl WorkloadEntry {
    fn new(source: &Source<'_>, spanned: Spanned<WorkloadFragment>) -> WorkloadEntry {
        let at = source.at(spanned.span().start);
        let w = spanned.into_inner();
        WorkloadEntry {
            at,
            name: source.locate_opt(w.name),
            kind: source.locate_opt(w.kind),
            pid: source.locate_opt(w.pid),
            unit: source.locate_opt(w.unit),
            session: source.locate_opt(w.session),
            socket: source.locate_opt(w.socket),
            screen: source.locate_opt(w.screen),
            container: source.locate_opt(w.container),
            machine: source.locate_opt(w.machine),
            check: source.locate_opt(w.check),
            tcp_established: source.locate_opt(w.tcp_established),
            pre_dump: source.locate_opt(w.pre_dump),
            leave_running: source.locate_opt(w.leave_running),
        }
    }

    /// The selector keys that are set, with where. `pid` is the only number: its
    /// location is all that matters when it is the wrong key.
    fn selectors(&self) -> Vec<(&'static str, &Location)> {
        let strings = [
            ("unit", &self.unit),
            ("session", &self.session),
            ("socket", &self.socket),
            ("screen", &self.screen),
            ("container", &self.container),
            ("machine", &self.machine),
        ];
        let mut set: Vec<(&'static str, &Location)> =
            self.pid.iter().map(|pid| ("pid", &pid.at)).collect();
        set.extend(
            strings
                .into_iter()
                .filter_map(|(key, value)| value.as_ref().map(|v| (key, &v.at))),
        );
        set
    }

    fn string_selector(&self, key: &str) -> Option<&Located<String>> {
        match key {
            "unit" => self.unit.as_ref(),
            "session" => self.session.as_ref(),
            "socket" => self.socket.as_ref(),
            "screen" => self.screen.as_ref(),
            "container" => self.container.as_ref(),
            "machine" => self.machine.as_ref(),
            _ => None,
        }
    }
}

/// Every key of every fragment applied so far; `None` means "not set by any file".
#[derive(Debug, Default)]
pub(crate) struct Merged {
    area_kind: Option<Located<AreaKind>>,
    area_path: Option<Located<String>>,
    area_device: Option<Located<String>>,
    area_memmap: Option<Located<String>>,
    area_margin: Option<Located<i64>>,
    known_good: Option<Located<String>>,
    extra_cmdline: Option<Located<Vec<Located<String>>>>,
    timeout_secs: Option<Located<i64>>,
    settle_secs: Option<Located<i64>>,
    scripts_dir: Option<Located<String>>,
    max_attempts: Option<Located<i64>>,
    keep: Option<Located<i64>>,
    suspend_encrypt: Option<Located<bool>>,
    suspend_compress: Option<Located<SuspendCompression>>,
    suspend_key_file: Option<Located<String>>,
    workloads: Vec<WorkloadEntry>,
    /// The index in `workloads` of each name, so that a file with many workloads is not
    /// searched once per workload.
    workload_index: HashMap<String, usize>,
}

impl Merged {
    /// Applies the fragment parsed from `text`, the contents of `path`, over what earlier
    /// files set. Fails only for duplicate workload names within this file; every
    /// other rule is checked by [`Merged::validate`] once all files are in.
    pub(crate) fn apply(
        &mut self,
        path: &Path,
        text: &str,
        fragment: Fragment,
    ) -> Result<(), ConfigError> {
        let source = Source {
            path,
            index: PositionIndex::new(text),
        };

        if let Some(area) = fragment.area {
            let kind = source.locate_opt(area.kind);
            let previous_kind = self.area_kind.as_ref().map(|k| k.value);
            if let Some(kind) = &kind {
                // The location keys of one kind of area mean nothing for another: a file
                // that switches the kind starts the location over rather than inherit a
                // `path` or `device` it would then have to contradict.
                if previous_kind.unwrap_or(AreaKind::Directory) != kind.value {
                    self.area_path = None;
                    self.area_device = None;
                    self.area_memmap = None;
                }
            }
            set(&mut self.area_kind, kind);
            set(&mut self.area_path, source.locate_opt(area.path));
            set(&mut self.area_device, source.locate_opt(area.device));
            set(&mut self.area_memmap, source.locate_opt(area.memmap));
            set(
                &mut self.area_margin,
                source.locate_opt(area.min_free_margin_percent),
            );
        }

        if let Some(kernel) = fragment.kernel {
            set(&mut self.known_good, source.locate_opt(kernel.known_good));
            let cmdline = kernel.extra_cmdline.map(|list| {
                let at = source.at(list.span().start);
                let tokens = list
                    .into_inner()
                    .into_iter()
                    .map(|t| source.locate(t))
                    .collect();
                Located { value: tokens, at }
            });
            set(&mut self.extra_cmdline, cmdline);
        }

        if let Some(health) = fragment.health {
            set(
                &mut self.timeout_secs,
                source.locate_opt(health.timeout_secs),
            );
            set(&mut self.settle_secs, source.locate_opt(health.settle_secs));
            set(&mut self.scripts_dir, source.locate_opt(health.scripts_dir));
        }
        if let Some(boot) = fragment.boot {
            set(&mut self.max_attempts, source.locate_opt(boot.max_attempts));
        }
        if let Some(retention) = fragment.retention {
            set(&mut self.keep, source.locate_opt(retention.keep));
        }
        if let Some(suspend) = fragment.suspend {
            set(
                &mut self.suspend_encrypt,
                source.locate_opt(suspend.encrypt),
            );
            set(
                &mut self.suspend_compress,
                source.locate_opt(suspend.compress),
            );
            set(
                &mut self.suspend_key_file,
                source.locate_opt(suspend.key_file),
            );
        }

        // Workloads append; a name defined by an earlier file is replaced whole and
        // keeps its place, so the order of checkpoint and restore stays stable.
        let mut named_here: HashMap<String, Location> = HashMap::new();
        for spanned in fragment.workload {
            let entry = WorkloadEntry::new(&source, spanned);
            let Some(name) = entry.name.clone() else {
                // validate() refuses it; nothing to replace by name.
                self.workloads.push(entry);
                continue;
            };
            if let Some(first) = named_here.get(&name.value) {
                return Err(ConfigError::invalid(
                    name.at,
                    Invalid::DuplicateWorkload {
                        name: name.value,
                        first: first.clone(),
                    },
                ));
            }
            named_here.insert(name.value.clone(), name.at.clone());
            match self.workload_index.get(&name.value) {
                Some(&index) => self.workloads[index] = entry,
                None => {
                    self.workload_index.insert(name.value, self.workloads.len());
                    self.workloads.push(entry);
                }
            }
        }
        Ok(())
    }

    /// Checks every rule and builds the settings, defaults filling what no file set.
    pub(crate) fn validate(self) -> Result<Settings, ConfigError> {
        let area = self.area()?;
        let kernel = self.kernel()?;
        let health = self.health()?;
        let boot = BootSettings {
            max_attempts: ranged(
                &self.max_attempts,
                "boot.max_attempts",
                1,
                10,
                BootSettings::default().max_attempts,
            )?,
        };
        let retention = RetentionSettings {
            keep: ranged(
                &self.keep,
                "retention.keep",
                1,
                u32::MAX,
                RetentionSettings::default().keep,
            )?,
        };
        let encrypt = self.suspend_encrypt.as_ref().is_some_and(|v| v.value);
        let compress = match &self.suspend_compress {
            Some(c)
                if c.value != SuspendCompression::None
                    && area.location.kind() == AreaKind::Pmem =>
            {
                return Err(ConfigError::invalid(
                    c.at.clone(),
                    Invalid::CompressOnPmem { value: c.value },
                ))
            }
            Some(c) => c.value,
            None => SuspendCompression::None,
        };
        let suspend = SuspendSettings {
            encrypt,
            compress,
            key_file: match &self.suspend_key_file {
                Some(file) => checked(file, "suspend.key_file", |v| {
                    validate::file(v, DEFAULT_SUSPEND_KEY_FILE)
                })?,
                None => DEFAULT_SUSPEND_KEY_FILE.into(),
            },
        };
        let workloads = self.workloads()?;
        Ok(Settings {
            area,
            kernel,
            health,
            boot,
            retention,
            suspend,
            workloads,
        })
    }

    fn area(&self) -> Result<AreaSettings, ConfigError> {
        let location = match &self.area_kind {
            Some(kind) if kind.value != AreaKind::Directory => self.device_area(kind)?,
            _ => self.directory_area()?,
        };
        Ok(AreaSettings {
            location,
            min_free_margin_percent: ranged(
                &self.area_margin,
                "area.min_free_margin_percent",
                0,
                100,
                AreaSettings::default().min_free_margin_percent,
            )?,
        })
    }

    fn directory_area(&self) -> Result<AreaLocation, ConfigError> {
        let kind = AreaKind::Directory;
        key_not_for_area("device", &self.area_device, kind)?;
        key_not_for_area("memmap", &self.area_memmap, kind)?;
        let path = match &self.area_path {
            Some(path) => checked(path, "area.path", |v| {
                validate::directory(v, DEFAULT_AREA_PATH)
            })?,
            None => DEFAULT_AREA_PATH.into(),
        };
        Ok(AreaLocation::Directory { path })
    }

    /// A disk or pmem area; `kind` is where a file chose it.
    fn device_area(&self, kind: &Located<AreaKind>) -> Result<AreaLocation, ConfigError> {
        key_not_for_area("path", &self.area_path, kind.value)?;
        let example = match kind.value {
            AreaKind::Pmem => "/dev/pmem0",
            AreaKind::Disk | AreaKind::Directory => "/dev/disk/by-id/nvme-EXAMPLE-part3",
        };
        let Some(device) = &self.area_device else {
            return Err(ConfigError::invalid(
                kind.at.clone(),
                Invalid::AreaKeyMissing {
                    key: "device",
                    kind: kind.value,
                },
            ));
        };
        let device = checked(device, "area.device", |v| validate::device(v, example))?;
        if kind.value == AreaKind::Pmem {
            let memmap = match &self.area_memmap {
                Some(memmap) => Some(checked(memmap, "area.memmap", |v| validate::memmap(v))?),
                None => None,
            };
            Ok(AreaLocation::Pmem { device, memmap })
        } else {
            key_not_for_area("memmap", &self.area_memmap, kind.value)?;
            Ok(AreaLocation::Disk { device })
        }
    }

    fn kernel(&self) -> Result<KernelSettings, ConfigError> {
        let known_good = match &self.known_good {
            None => KnownGood::Current,
            Some(k) if k.value == "current" => KnownGood::Current,
            Some(k) => {
                checked(k, "kernel.known_good", |v| validate::kernel_release(v))?;
                KnownGood::Release(k.value.clone())
            }
        };
        let mut extra_cmdline = Vec::new();
        for token in self.extra_cmdline.iter().flat_map(|list| &list.value) {
            checked(token, "kernel.extra_cmdline", |v| {
                validate::cmdline_token(v)
            })?;
            extra_cmdline.push(token.value.clone());
        }
        Ok(KernelSettings {
            known_good,
            extra_cmdline,
        })
    }

    fn health(&self) -> Result<HealthSettings, ConfigError> {
        let defaults = HealthSettings::default();
        let timeout_secs = ranged(
            &self.timeout_secs,
            "health.timeout_secs",
            10,
            3600,
            defaults.timeout_secs,
        )?;
        let settle_secs = ranged(
            &self.settle_secs,
            "health.settle_secs",
            0,
            3600,
            defaults.settle_secs,
        )?;
        if settle_secs > timeout_secs {
            // Defaults are consistent, so one of the two was set by a file: point at
            // the settle time if it was set, else at the timeout.
            let at = self
                .settle_secs
                .as_ref()
                .or(self.timeout_secs.as_ref())
                .map(|v| v.at.clone());
            if let Some(at) = at {
                return Err(ConfigError::invalid(
                    at,
                    Invalid::SettleLongerThanTimeout {
                        settle: settle_secs,
                        timeout: timeout_secs,
                    },
                ));
            }
        }
        let scripts_dir = match &self.scripts_dir {
            Some(dir) => checked(dir, "health.scripts_dir", |v| {
                validate::directory(v, DEFAULT_SCRIPTS_DIR)
            })?,
            None => defaults.scripts_dir,
        };
        Ok(HealthSettings {
            timeout_secs,
            settle_secs,
            scripts_dir,
        })
    }

    fn workloads(&self) -> Result<Vec<Workload>, ConfigError> {
        let mut workloads: Vec<Workload> = Vec::with_capacity(self.workloads.len());
        // Which workload selects each target, by index in `workloads`.
        let mut targets: HashMap<(WorkloadKind, String), usize> = HashMap::new();
        for entry in &self.workloads {
            let workload = workload(entry)?;
            let key = describe_target(&workload.selector);
            // Two names for one target would checkpoint and restore it twice.
            if let Some(&other) = targets.get(&key) {
                let (kind, target) = key;
                return Err(ConfigError::invalid(
                    entry.at.clone(),
                    Invalid::SameTarget {
                        name: workload.name,
                        other: workloads[other].name.clone(),
                        other_at: self.workloads[other].at.clone(),
                        kind,
                        target,
                    },
                ));
            }
            targets.insert(key, workloads.len());
            workloads.push(workload);
        }
        Ok(workloads)
    }
}

/// Refuses `key` when a file set it although the area's kind does not use it.
fn key_not_for_area(
    key: &'static str,
    value: &Option<Located<String>>,
    kind: AreaKind,
) -> Result<(), ConfigError> {
    match value {
        Some(value) => Err(ConfigError::invalid(
            value.at.clone(),
            Invalid::AreaKeyNotForKind { key, kind },
        )),
        None => Ok(()),
    }
}

fn describe_target(selector: &Selector) -> (WorkloadKind, String) {
    let target = match selector {
        Selector::Process { pid } => pid.to_string(),
        Selector::Service { unit } | Selector::Scope { unit } => unit.clone(),
        Selector::Session { session } => session.clone(),
        Selector::Tmux { socket } => socket.clone(),
        Selector::Screen { screen } => screen.clone(),
        Selector::Podman { container } => container.clone(),
        Selector::Nspawn { machine } => machine.clone(),
    };
    (selector.kind(), target)
}

fn workload(entry: &WorkloadEntry) -> Result<Workload, ConfigError> {
    let missing = |key: &'static str, kind: Option<WorkloadKind>| {
        ConfigError::invalid(
            entry.at.clone(),
            Invalid::WorkloadKeyMissing {
                workload: entry.name.as_ref().map(|n| n.value.clone()),
                key,
                kind,
            },
        )
    };
    let name = entry.name.as_ref().ok_or_else(|| missing("name", None))?;
    checked(name, "workload.name", |v| validate::workload_name(v))?;
    let kind = entry
        .kind
        .as_ref()
        .ok_or_else(|| missing("kind", None))?
        .value;

    let wanted = kind.selector_key();
    if let Some((key, at)) = entry
        .selectors()
        .into_iter()
        .find(|(key, _)| *key != wanted)
    {
        return Err(ConfigError::invalid(
            at.clone(),
            Invalid::SelectorNotForKind {
                workload: name.value.clone(),
                key,
                kind,
            },
        ));
    }
    // The value of a string selector, checked for its kind.
    let string = || -> Result<String, ConfigError> {
        match entry.string_selector(wanted) {
            Some(value) => {
                checked(value, &format!("workload.{wanted}"), |v| {
                    validate::selector(kind, v)
                })?;
                Ok(value.value.clone())
            }
            None if kind == WorkloadKind::Tmux => Ok(DEFAULT_TMUX_SOCKET.to_string()),
            None => Err(missing(wanted, Some(kind))),
        }
    };
    let selector = match kind {
        WorkloadKind::Process => {
            let pid = entry
                .pid
                .as_ref()
                .ok_or_else(|| missing("pid", Some(kind)))?;
            // 1 is init, which cannot be checkpointed; 2^22 is the kernel's PID_MAX_LIMIT.
            Selector::Process {
                pid: ranged_value(pid, "workload.pid", 2, 1 << 22, None)?,
            }
        }
        WorkloadKind::Service => Selector::Service { unit: string()? },
        WorkloadKind::Scope => Selector::Scope { unit: string()? },
        WorkloadKind::Session => Selector::Session { session: string()? },
        WorkloadKind::Tmux => Selector::Tmux { socket: string()? },
        WorkloadKind::Screen => Selector::Screen { screen: string()? },
        WorkloadKind::Podman => Selector::Podman {
            container: string()?,
        },
        WorkloadKind::Nspawn => Selector::Nspawn { machine: string()? },
    };

    let check = match &entry.check {
        Some(check) => {
            checked(check, "workload.check", |argv| {
                validate::check_command(argv)
            })?;
            Some(check.value.clone())
        }
        None => None,
    };
    Ok(Workload {
        name: name.value.clone(),
        selector,
        check,
        tcp_established: entry.tcp_established.as_ref().is_some_and(|v| v.value),
        pre_dump: match &entry.pre_dump {
            Some(Located {
                value: PreDumpValue::Count(n),
                at,
            }) => ranged_value(
                &Located {
                    value: *n,
                    at: at.clone(),
                },
                "workload.pre_dump",
                0,
                dumper::manifest::MAX_PRE_DUMPS,
                Some(0),
            )?
            .into(),
            Some(word) => checked(word, "workload.pre_dump", |v| match v {
                PreDumpValue::Word(w) if w == "auto" => Ok(PreDumps::Auto),
                _ => Err(Rejection {
                    reason: format!(
                        "pre_dump is a number of pre-dumps from 0 to {} or \"auto\"",
                        dumper::manifest::MAX_PRE_DUMPS
                    ),
                    hint: "\"auto\" pre-dumps as long as each copies clearly less than the one \
                           before"
                        .into(),
                }),
            })?,
            None => PreDumps::None,
        },
        leave_running: entry.leave_running.as_ref().is_some_and(|v| v.value),
    })
}

/// Runs a single-value check, turning its rejection into an error at the value.
fn checked<V: std::fmt::Debug, R>(
    value: &Located<V>,
    key: &str,
    check: impl FnOnce(&V) -> Result<R, Rejection>,
) -> Result<R, ConfigError> {
    check(&value.value).map_err(|rejection| {
        ConfigError::invalid(
            value.at.clone(),
            Invalid::BadValue {
                key: key.to_string(),
                // Debug quotes and escapes strings and lists much as TOML writes them.
                value: format!("{:?}", value.value),
                reason: rejection.reason,
                hint: rejection.hint,
            },
        )
    })
}

/// The value of an optional integer key within `min..=max`, or the default.
fn ranged<T>(
    value: &Option<Located<i64>>,
    key: &'static str,
    min: T,
    max: T,
    default: T,
) -> Result<T, ConfigError>
where
    T: Copy + Into<i64> + TryFrom<i64>,
{
    match value {
        Some(value) => ranged_value(value, key, min, max, Some(default)),
        None => Ok(default),
    }
}

fn ranged_value<T>(
    value: &Located<i64>,
    key: &'static str,
    min: T,
    max: T,
    default: Option<T>,
) -> Result<T, ConfigError>
where
    T: Copy + Into<i64> + TryFrom<i64>,
{
    let (min, max) = (min.into(), max.into());
    if (min..=max).contains(&value.value) {
        if let Ok(value) = T::try_from(value.value) {
            return Ok(value);
        }
    }
    Err(ConfigError::invalid(
        value.at.clone(),
        Invalid::OutOfRange {
            key,
            value: value.value,
            min,
            max,
            default: default.map(Into::into),
        },
    ))
}
