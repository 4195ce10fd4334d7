//! Finding garbage collector roots as CppNix's gc.cc does: the permanent
//! roots under `$state/gcroots` and `$state/profiles`, the runtime roots
//! that live processes hold (read from /proc), and the temp roots of other
//! processes. Adding indirect and permanent roots.

use super::super::LocalStore;
use super::super::error::{Error, IoContext, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use store::hash::Algorithm;
use store::store_path::StorePath;

/// Root paths with what holds them (symlink paths, `/proc/...` files, or
/// `{temp:<pid>}` / `{censored}`).
pub type Roots = BTreeMap<StorePath, BTreeSet<String>>;

const CENSORED: &str = "{censored}";

impl LocalStore {
    /// Every root: permanent, runtime and temporary. With `censor`, runtime
    /// and temp roots do not say which process holds them (as CppNix does for
    /// untrusted clients).
    pub fn find_roots(&self, censor: bool) -> Result<Roots> {
        self.find_roots_logged(censor, &mut |line| tracing::info!("{line}"))
    }

    /// [`Self::find_roots`], giving `log` the lines CppNix prints at info
    /// level while it looks ("removing stale link from '…' to '…'", ...):
    /// its daemon sends them to the client.
    pub fn find_roots_logged(&self, censor: bool, log: &mut dyn FnMut(&str)) -> Result<Roots> {
        let mut roots = self.find_roots_no_temp(censor, log)?;
        // Valid or not, as CppNix's `findTempRoots`: a temp root is often
        // taken before its path exists. Released roots may still be in our
        // roots file (see temp_roots).
        self.shared.temp_roots.flush();
        for (pid, path) in super::super::temp_roots::read_all_with_owner(&self.shared.config.state_dir)? {
            if let Ok(p) = self.shared.config.store_dir.parse_path(&path) {
                roots.entry(p).or_default().insert(if censor {
                    CENSORED.to_owned()
                } else {
                    format!("{{temp:{pid}}}")
                });
            }
        }
        Ok(roots)
    }

    /// Permanent and runtime roots; `log` as for [`Self::find_roots_logged`].
    pub(crate) fn find_roots_no_temp(&self, censor: bool, log: &mut dyn FnMut(&str)) -> Result<Roots> {
        let mut roots = Roots::new();
        let state = &self.shared.config.state_dir;
        self.find_permanent_roots(&state.join("gcroots"), &mut roots, log)?;
        self.find_permanent_roots(&state.join("profiles"), &mut roots, log)?;
        self.find_runtime_roots(&mut roots, censor)?;
        Ok(roots)
    }

    fn is_in_store(&self, p: &str) -> bool {
        p.strip_prefix(self.shared.config.store_dir.as_str()).is_some_and(|r| r.starts_with('/') && r.len() > 1)
    }

    /// The valid store path at or above `target`, if any.
    fn valid_store_path_of(&self, target: &str) -> Result<Option<StorePath>> {
        if !self.is_in_store(target) {
            return Ok(None);
        }
        match self.shared.config.store_dir.split_path(target) {
            Ok((p, _)) if self.is_valid(&p)? => Ok(Some(p)),
            _ => Ok(None),
        }
    }

    fn found_root(&self, link: &Path, target: &str, roots: &mut Roots, log: &mut dyn FnMut(&str)) -> Result<()> {
        match self.valid_store_path_of(target)? {
            Some(p) => {
                roots.entry(p).or_default().insert(link.to_string_lossy().into_owned());
            }
            None => log(&format!("skipping invalid root from '{}' to '{target}'", link.display())),
        }
        Ok(())
    }

    fn find_permanent_roots(&self, top: &Path, roots: &mut Roots, log: &mut dyn FnMut(&str)) -> Result<()> {
        let auto_dir = self.shared.config.state_dir.join("gcroots/auto");
        let mut stack = vec![top.to_owned()];
        while let Some(path) = stack.pop() {
            // CppNix passes over what it may not read, or what went away,
            // and says so.
            let unreadable =
                |log: &mut dyn FnMut(&str)| log(&format!("cannot read potential root '{}'", path.display()));
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if ignorable(&e) => {
                    unreadable(log);
                    continue;
                }
                Err(e) => return Err(e).at("getting attributes of", &path),
            };
            if meta.is_dir() {
                match std::fs::read_dir(&path) {
                    Ok(rd) => {
                        for e in rd {
                            stack.push(e.at("reading directory", &path)?.path());
                        }
                    }
                    Err(e) if ignorable(&e) => unreadable(log),
                    Err(e) => return Err(e).at("reading directory", &path),
                }
            } else if meta.file_type().is_symlink() {
                let raw = std::fs::read_link(&path).at("reading symlink", &path)?;
                let target = absolute(&raw, path.parent().unwrap_or(Path::new("/")));
                let target_s = target.to_string_lossy().into_owned();
                if self.is_in_store(&target_s) {
                    self.found_root(&path, &target_s, roots, log)?;
                    continue;
                }
                // An indirect root: a link to a link into the store.
                match std::fs::symlink_metadata(&target) {
                    // Missing, as CppNix's `pathExists` sees it.
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                        if path.starts_with(&auto_dir) {
                            log(&format!("removing stale link from '{}' to '{}'", path.display(), target.display()));
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                    Err(e) if ignorable(&e) => unreadable(log),
                    Err(e) => return Err(e).at("getting attributes of", &target),
                    Ok(m) if m.file_type().is_symlink() => {
                        let raw2 = std::fs::read_link(&target).at("reading symlink", &target)?;
                        let t2 = absolute(&raw2, target.parent().unwrap_or(Path::new("/")));
                        let t2 = t2.to_string_lossy().into_owned();
                        if self.is_in_store(&t2) {
                            self.found_root(&target, &t2, roots, log)?;
                        }
                    }
                    Ok(_) => {}
                }
            } else if meta.is_file() {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if let Ok(p) = StorePath::from_base_name(&name)
                    && self.is_valid(&p)?
                {
                    roots.entry(p).or_default().insert(path.to_string_lossy().into_owned());
                }
            }
        }
        Ok(())
    }

    /// Store paths live processes use: their executable, working directory,
    /// open files, mapped files, and store paths in their environment; plus
    /// the kernel's helper programs.
    fn find_runtime_roots(&self, roots: &mut Roots, censor: bool) -> Result<()> {
        let mut unchecked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if let Ok(proc_dir) = std::fs::read_dir("/proc") {
            for ent in proc_dir.flatten() {
                let name = ent.file_name();
                let name = name.to_string_lossy();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let base = PathBuf::from("/proc").join(&*name);
                for link in ["exe", "cwd"] {
                    read_proc_link(&base.join(link), &mut unchecked);
                }
                if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
                    for fd in fds.flatten() {
                        read_proc_link(&fd.path(), &mut unchecked);
                    }
                }
                let maps = base.join("maps");
                if let Ok(text) = std::fs::read_to_string(&maps) {
                    for line in text.lines() {
                        // address perms offset dev inode pathname
                        let mut fields = line.split_whitespace();
                        if let (Some(path), None) = (fields.nth(5), fields.next())
                            && path.starts_with('/')
                        {
                            unchecked.entry(path.to_owned()).or_default().insert(maps.to_string_lossy().into_owned());
                        }
                    }
                }
                let environ = base.join("environ");
                if let Ok(bytes) = std::fs::read(&environ) {
                    for p in self.store_paths_in(&bytes) {
                        unchecked.entry(p).or_default().insert(environ.to_string_lossy().into_owned());
                    }
                }
            }
        }
        for f in ["/proc/sys/kernel/modprobe", "/proc/sys/kernel/fbsplash", "/proc/sys/kernel/poweroff_cmd"] {
            if let Ok(s) = std::fs::read_to_string(f) {
                let s = s.trim_end_matches('\n');
                if !s.is_empty() {
                    unchecked.entry(s.to_owned()).or_default().insert(f.to_owned());
                }
            }
        }
        for (target, links) in unchecked {
            if let Some(p) = self.valid_store_path_of(&target)? {
                let entry = roots.entry(p).or_default();
                if censor {
                    entry.insert(CENSORED.to_owned());
                } else {
                    entry.extend(links);
                }
            }
        }
        Ok(())
    }

    /// Every `<store dir>/<nix32 chars><name chars>` in a byte string (CppNix
    /// matches the same pattern in /proc/*/environ).
    fn store_paths_in(&self, bytes: &[u8]) -> Vec<String> {
        let prefix = format!("{}/", self.shared.config.store_dir.as_str());
        let prefix = prefix.as_bytes();
        let mut found = Vec::new();
        let mut i = 0;
        while let Some(pos) = find(&bytes[i..], prefix) {
            let start = i + pos;
            let mut end = start + prefix.len();
            let hash_start = end;
            while end < bytes.len() && (bytes[end].is_ascii_digit() || bytes[end].is_ascii_lowercase()) {
                end += 1;
            }
            if end > hash_start {
                while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || b"+-._?=".contains(&bytes[end])) {
                    end += 1;
                }
                found.push(String::from_utf8_lossy(&bytes[start..end]).into_owned());
            }
            i = end.max(start + 1);
        }
        found
    }

    /// Makes `link` (a symlink outside the store) a root by linking to it
    /// from `$state/gcroots/auto/<nix32 SHA-1 of its path>`.
    pub fn add_indirect_root(&self, link: &Path) -> Result<()> {
        let link_s = link.to_string_lossy();
        let name = Algorithm::Sha1.digest(link_s.as_bytes()).to_nix32();
        let root = self.shared.config.state_dir.join("gcroots/auto").join(name);
        make_symlink(&root, link)
    }

    /// Creates `gc_root` as a symlink to `path` and registers it as an
    /// indirect root (CppNix `addPermRoot`).
    pub fn add_perm_root(&self, path: &StorePath, gc_root: &Path) -> Result<PathBuf> {
        let gc_root = absolute(gc_root, &std::env::current_dir().at("getting", "current directory")?);
        if self.is_in_store(&gc_root.to_string_lossy()) {
            return Err(Error::RootInStore(gc_root));
        }
        self.add_temp_root(path)?;
        if let Ok(meta) = std::fs::symlink_metadata(&gc_root) {
            let points_into_store = meta.file_type().is_symlink()
                && std::fs::read_link(&gc_root).is_ok_and(|t| self.is_in_store(&t.to_string_lossy()));
            if !points_into_store {
                return Err(Error::RootExists(gc_root));
            }
        }
        make_symlink(&gc_root, Path::new(&self.display(path)))?;
        self.add_indirect_root(&gc_root)?;
        Ok(gc_root)
    }
}

fn ignorable(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::ACCESS.raw_os_error()
        || code == rustix::io::Errno::NOENT.raw_os_error()
        || code == rustix::io::Errno::NOTDIR.raw_os_error())
}

fn read_proc_link(link: &Path, unchecked: &mut BTreeMap<String, BTreeSet<String>>) {
    if let Ok(target) = std::fs::read_link(link) {
        let t = target.to_string_lossy().into_owned();
        if t.starts_with('/') {
            unchecked.entry(t).or_default().insert(link.to_string_lossy().into_owned());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `p` made absolute against `base` and normalised lexically (`.`/`..`),
/// without touching the file system (CppNix `absPath` + `canonPath`).
pub(crate) fn absolute(p: &Path, base: &Path) -> PathBuf {
    let joined = if p.is_absolute() { p.to_owned() } else { base.join(p) };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Atomically creates or replaces a symlink `link -> target`.
fn make_symlink(link: &Path, target: &Path) -> Result<()> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).at("creating directory", parent)?;
    }
    let mut rnd = [0u8; 4];
    let _ = getrandom::fill(&mut rnd);
    let mut tmp = link.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}-{}", std::process::id(), u32::from_le_bytes(rnd)));
    let tmp = PathBuf::from(tmp);
    std::os::unix::fs::symlink(target, &tmp).at("creating symlink", &tmp)?;
    std::fs::rename(&tmp, link).at("renaming symlink into", link)
}
