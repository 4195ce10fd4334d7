//! The `/bin/sh` a sandbox gets when nix.conf does not set `sandbox-paths`.
//! CppNix is built with one (`SANDBOX_SHELL` in its globals.cc: a static
//! busybox upstream, `bash-static` in Debian's 2.26) and puts
//! `/bin/sh=<it>` in `sandbox-paths` by default; builders that are plain
//! `/bin/sh` scripts (the usual first derivation) rely on it. Armitage looks
//! for one on the machine instead, in this order:
//! 1. `sandbox-shell` from armitage.toml, if set;
//! 2. a static busybox (its applets make `mkdir`, `cat`, … work in a
//!    sandbox with nothing else) or a static bash, from Debian's
//!    `busybox-static` and `bash-static`;
//! 3. the host's `/bin/sh`, with its ELF interpreter and the libraries it
//!    needs, each bind-mounted read-only at its own path.
//!
//! A shell that is dynamically linked gets its interpreter and libraries
//! from its own ELF headers (`PT_INTERP`, `DT_NEEDED`, `DT_RUNPATH`), found
//! where the dynamic loader looks without its cache.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// Static shells, best first.
const STATIC_SHELLS: &[&str] = &["/bin/busybox", "/usr/bin/busybox", "/bin/bash-static", "/usr/bin/bash-static"];

/// Where the dynamic loader looks for libraries without its cache (after
/// `DT_RUNPATH`), for this machine's multiarch triplet.
fn library_dirs() -> Vec<String> {
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    vec![
        format!("/lib/{triplet}"),
        format!("/usr/lib/{triplet}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
    ]
}

/// The `sandbox-paths` entries giving a sandbox `/bin/sh` (see the module
/// documentation); an error says why there is none.
pub fn sandbox_paths(configured: Option<&Path>) -> Result<BTreeSet<String>, String> {
    if let Some(shell) = configured {
        return shell_entries(shell);
    }
    for candidate in STATIC_SHELLS {
        if read_elf(Path::new(candidate)).is_ok_and(|elf| elf.interpreter.is_none()) {
            return Ok(BTreeSet::from([format!("/bin/sh={candidate}")]));
        }
    }
    shell_entries(Path::new("/bin/sh"))
}

/// `/bin/sh=<shell>`, and for a dynamically linked shell its interpreter
/// and libraries at their own paths.
fn shell_entries(shell: &Path) -> Result<BTreeSet<String>, String> {
    let real = std::fs::canonicalize(shell).map_err(|e| format!("'{}': {e}", shell.display()))?;
    let elf = read_elf(&real)?;
    let mut entries = BTreeSet::from([format!("/bin/sh={}", real.display())]);
    let Some(interpreter) = elf.interpreter.clone() else { return Ok(entries) };
    if !Path::new(&interpreter).exists() {
        return Err(format!("'{}' needs the ELF interpreter '{interpreter}', which does not exist", real.display()));
    }
    entries.insert(interpreter);
    let dirs = library_dirs();
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<(PathBuf, Elf)> = VecDeque::from([(real.clone(), elf)]);
    while let Some((file, elf)) = queue.pop_front() {
        for lib in &elf.needed {
            if !seen.insert(lib.clone()) {
                continue;
            }
            let found = elf
                .runpath
                .iter()
                .map(|d| d.replace("$ORIGIN", &file.parent().unwrap_or(Path::new("/")).display().to_string()))
                .chain(dirs.iter().cloned())
                .map(|d| Path::new(&d).join(lib))
                .find(|p| p.exists())
                .ok_or_else(|| {
                    format!("'{}' needs the library '{lib}', which is in none of {}", file.display(), dirs.join(", "))
                })?;
            let lib_elf = read_elf(&found)?;
            entries.insert(found.display().to_string());
            queue.push_back((found, lib_elf));
        }
    }
    Ok(entries)
}

/// A build whose builder is `/bin/sh` fails with this one line, rather
/// than "executing '/bin/sh': No such file or directory", when nothing in
/// `sandbox-paths` puts a shell there (the store never does).
pub fn check_builder(builder: &str, sandbox_paths: &BTreeSet<String>) -> Result<(), String> {
    let provides_sh = sandbox_paths.iter().filter_map(|e| super::spec::BindMount::parse(e)).any(|b| {
        let target = b.target.trim_end_matches('/');
        (target == "/bin/sh" || target == "/bin") && (b.source.exists() || !b.optional)
    });
    if builder != "/bin/sh" || provides_sh {
        return Ok(());
    }
    Err("cannot run '/bin/sh' in the sandbox: nothing provides it; set 'sandbox-paths = /bin/sh=<a static shell>' in nix.conf \
         or 'sandbox-shell' in armitage.toml, or install busybox-static"
        .to_owned())
}

/// What a shell needs from the dynamic loader.
#[derive(Debug, Default, PartialEq, Eq)]
struct Elf {
    interpreter: Option<String>,
    needed: Vec<String>,
    runpath: Vec<String>,
}

/// Reads the program headers and dynamic section of a 64-bit
/// little-endian ELF file (what Linux runs on the machines we build for).
fn read_elf(path: &Path) -> Result<Elf, String> {
    let data = std::fs::read(path).map_err(|e| format!("reading '{}': {e}", path.display()))?;
    parse_elf(&data).ok_or_else(|| format!("'{}' is not a 64-bit little-endian ELF executable", path.display()))
}

fn parse_elf(data: &[u8]) -> Option<Elf> {
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| data.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let u64_at = |o: usize| data.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let c_str = |o: usize| -> Option<String> {
        let rest = data.get(o..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let ph_off = usize::try_from(u64_at(0x20)?).ok()?;
    let ph_size = usize::from(u16_at(0x36)?);
    let ph_count = usize::from(u16_at(0x38)?);
    let mut elf = Elf::default();
    let mut loads = Vec::new(); // (vaddr, offset, size)
    let mut dynamic = None;
    for i in 0..ph_count {
        let h = ph_off.checked_add(i.checked_mul(ph_size)?)?;
        let (offset, vaddr, size) = (u64_at(h + 8)?, u64_at(h + 16)?, u64_at(h + 32)?);
        match u32_at(h)? {
            1 => loads.push((vaddr, offset, size)),
            2 => dynamic = Some((usize::try_from(offset).ok()?, usize::try_from(size).ok()?)),
            3 => elf.interpreter = Some(c_str(usize::try_from(offset).ok()?)?),
            _ => {}
        }
    }
    let Some((dyn_off, dyn_size)) = dynamic else { return Some(elf) };
    let (mut strtab, mut needed, mut runpath) = (None, Vec::new(), Vec::new());
    for entry in (dyn_off..dyn_off.checked_add(dyn_size)?).step_by(16) {
        let (tag, value) = (u64_at(entry)?, u64_at(entry + 8)?);
        match tag {
            0 => break,
            1 => needed.push(value),
            5 => strtab = Some(value),
            15 | 29 => runpath.push(value),
            _ => {}
        }
    }
    // The string table is given as a virtual address.
    let strtab = strtab?;
    let (vaddr, offset, _) = loads.iter().find(|(v, _, size)| (*v..v.saturating_add(*size)).contains(&strtab))?;
    let base = usize::try_from(strtab - vaddr + offset).ok()?;
    let at = |v: u64| usize::try_from(v).ok().and_then(|v| base.checked_add(v)).and_then(c_str);
    elf.needed = needed.into_iter().map(at).collect::<Option<_>>()?;
    elf.runpath = runpath
        .into_iter()
        .map(at)
        .collect::<Option<Vec<_>>>()?
        .iter()
        .flat_map(|p| p.split(':').map(str::to_owned))
        .collect();
    Some(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own shell: dynamically linked on Debian, needing libc.
    #[test]
    fn the_hosts_sh_comes_with_its_interpreter_and_libraries() {
        let entries = shell_entries(Path::new("/bin/sh")).unwrap();
        let real = std::fs::canonicalize("/bin/sh").unwrap();
        assert!(entries.contains(&format!("/bin/sh={}", real.display())), "{entries:?}");
        let elf = read_elf(&real).unwrap();
        let interpreter = elf.interpreter.expect("Debian's /bin/sh is dynamically linked");
        assert!(entries.contains(&interpreter), "{entries:?}");
        assert!(entries.iter().any(|e| e.ends_with("/libc.so.6")), "{entries:?}");
        for e in entries.iter().filter(|e| !e.starts_with("/bin/sh=")) {
            assert!(Path::new(e).exists(), "{e}");
        }
    }

    #[test]
    fn a_sh_builder_needs_a_sh_in_sandbox_paths() {
        let paths = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let e = check_builder("/bin/sh", &paths(&[])).unwrap_err();
        assert!(e.starts_with("cannot run '/bin/sh' in the sandbox"), "{e}");
        assert!(!e.contains('\n'));
        assert!(
            check_builder("/bin/sh", &paths(&["/bin/sh=/nonexistent/sh?"])).is_err(),
            "an optional entry that is missing gives nothing"
        );
        check_builder("/bin/sh", &paths(&["/bin/sh=/bin/sh"])).unwrap();
        check_builder("/bin/sh", &paths(&["/bin"])).unwrap();
        check_builder("/nix/store/x-bash/bin/bash", &paths(&[])).unwrap();
    }

    #[test]
    fn a_configured_shell_that_is_missing_is_an_error() {
        let e = sandbox_paths(Some(Path::new("/nonexistent/sh"))).unwrap_err();
        assert!(e.contains("/nonexistent/sh"), "{e}");
    }

    #[test]
    fn not_elf_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("sh");
        std::fs::write(&script, "#!/bin/true\n").unwrap();
        let e = shell_entries(&script).unwrap_err();
        assert!(e.contains("is not a 64-bit little-endian ELF"), "{e}");
        assert_eq!(parse_elf(b"\x7fELF\x02\x01"), None, "truncated headers");
    }
}
