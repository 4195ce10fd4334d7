//! The machine facts some setting defaults depend on (CppNix's
//! `Settings::getDefaultCores`, `getDefaultSystemFeatures`,
//! `getDefaultExtraPlatforms`, `isWSL1`, `isRootUser`), gathered once so that
//! [`super::Settings`] can be built from explicit values in tests.

use std::collections::BTreeSet;

/// What the defaults of `system`, `cores`, `max-jobs = auto`,
/// `extra-platforms`, `system-features`, `build-users-group`,
/// `use-sqlite-wal` and `require-drop-supplementary-groups` are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Nix's name for this platform (`x86_64-linux`).
    pub system: String,
    /// CPUs available to this process.
    pub cores: u32,
    /// Whether we run as uid 0.
    pub is_root: bool,
    /// Windows Subsystem for Linux 1, where SQLite's WAL mode does not work.
    pub wsl1: bool,
    /// Platforms this machine can also build for (`i686-linux`, and the
    /// `x86_64-vN-linux` microarchitecture levels the CPU supports).
    pub extra_platforms: BTreeSet<String>,
    /// `nixos-test benchmark big-parallel uid-range`, plus `kvm` when
    /// `/dev/kvm` is readable and writable.
    pub system_features: BTreeSet<String>,
    /// The default of `sandbox-paths`: CppNix's is `/bin/sh=` its
    /// build-time `SANDBOX_SHELL`; a daemon fills in the shell it found
    /// (empty from [`Host::detect`], which looks for none).
    pub sandbox_paths: BTreeSet<String>,
}

impl Host {
    /// Probes the running machine.
    pub fn detect() -> Host {
        let system = nix_system();
        let wsl1 = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .is_ok_and(|release| release.trim_end().ends_with("-Microsoft"));
        let mut extra_platforms = BTreeSet::new();
        if system == "x86_64-linux" && !wsl1 {
            extra_platforms.insert("i686-linux".to_owned());
        }
        if cfg!(target_os = "linux") {
            extra_platforms.extend(x86_64_levels().into_iter().map(|l| format!("{l}-linux")));
        }
        let mut system_features: BTreeSet<String> =
            ["nixos-test", "benchmark", "big-parallel"].map(str::to_owned).into();
        if cfg!(target_os = "linux") {
            system_features.insert("uid-range".to_owned());
            // CppNix asks access(2) for R_OK | W_OK; opening the device
            // read-write answers the same for the daemon's own user.
            if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok() {
                system_features.insert("kvm".to_owned());
            }
        }
        Host {
            system,
            cores: std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            is_root: real_uid() == Some(0),
            wsl1,
            extra_platforms,
            system_features,
            sandbox_paths: BTreeSet::new(),
        }
    }
}

/// The real user id (CppNix's `isRootUser` asks `getuid`), from the `Uid:`
/// line of `/proc/self/status` (real, effective, saved, file system).
fn real_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// `<arch>-<os>` as Nix spells it (`SYSTEM` in CppNix's build).
fn nix_system() -> String {
    let arch = match std::env::consts::ARCH {
        "x86" => "i686",
        "powerpc64" if cfg!(target_endian = "little") => "powerpc64le",
        "arm" => "armv7l",
        other => other,
    };
    format!("{arch}-{}", std::env::consts::OS)
}

/// The x86-64 microarchitecture levels this CPU reaches (CppNix's
/// `computeLevels`). LAHF/SAHF, part of v2, is not checked: every CPU with
/// the rest of v2 has it.
#[cfg(target_arch = "x86_64")]
fn x86_64_levels() -> Vec<&'static str> {
    use std::arch::is_x86_feature_detected as has;
    let mut levels = Vec::new();
    if !(has!("fxsr") && has!("mmx") && has!("sse") && has!("sse2")) {
        return levels;
    }
    levels.push("x86_64-v1");
    if !(has!("cmpxchg16b") && has!("popcnt") && has!("sse3") && has!("ssse3") && has!("sse4.1") && has!("sse4.2")) {
        return levels;
    }
    levels.push("x86_64-v2");
    if !(has!("avx") && has!("avx2") && has!("f16c") && has!("fma") && has!("lzcnt") && has!("movbe")) {
        return levels;
    }
    levels.push("x86_64-v3");
    if !(has!("avx512f") && has!("avx512bw") && has!("avx512cd") && has!("avx512dq") && has!("avx512vl")) {
        return levels;
    }
    levels.push("x86_64-v4");
    levels
}

#[cfg(not(target_arch = "x86_64"))]
fn x86_64_levels() -> Vec<&'static str> {
    Vec::new()
}
