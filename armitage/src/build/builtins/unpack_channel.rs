//! `builtin:unpack-channel`, the builder `nix-channel --update` uses
//! (`<nix/unpack-channel.nix>`): unpacks the channel tarball `src` into
//! `$out` and names its one top-level entry `channelName`. Reproduces
//! CppNix's `builtinUnpackChannel` (unpack-channel.cc) and the extraction of
//! its `unpackTarfile` (tarfile.cc).
//!
//! Formats: CppNix reads whatever libarchive recognises; here tar archives,
//! plain or compressed with gzip, bzip2, xz or zstd (recognised by their
//! magic numbers, as libarchive does, not by the file name). Zip files,
//! other compressors and other archive formats are refused with an error.
//!
//! Hostile archives: entries never land outside `$out`. Absolute names are
//! taken as relative to it (as CppNix does), a name with a `..` component
//! is refused (libarchive's "Path contains '..'"), nothing is written
//! through a symlink (the `tar` crate checks each parent directory, as
//! libarchive's `SECURE_SYMLINKS` does), hard links must point inside, and
//! device files and FIFOs are refused (a store path cannot hold them).
//! A `channelName` with a `/` is refused, as Nix 2.24.7 and later do (older
//! Nix renamed the entry wherever the name led).

use super::context::Context;
use super::messages::{arg, sys_error};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

pub fn run(cx: &Context) -> Result<(), String> {
    let out = PathBuf::from(OsStr::from_bytes(cx.attr("out")?));
    let channel_name = OsStr::from_bytes(cx.attr("channelName")?);
    let src = PathBuf::from(OsStr::from_bytes(cx.attr("src")?));
    if channel_name.as_bytes().contains(&b'/') {
        return Err(format!(
            "channelName is not allowed to contain filesystem separators, got {}",
            arg(channel_name.to_string_lossy())
        ));
    }
    std::fs::create_dir_all(&out).map_err(|e| sys_error(format!("creating directory '{}'", arg(out.display())), &e))?;
    unpack_tarball(&src, &out)?;
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(&out)
        .map_err(|e| sys_error(format!("failed to read directory {}", arg(out.display())), &e))?
    {
        let entry = entry.map_err(|e| sys_error(format!("failed to read directory {}", arg(out.display())), &e))?;
        entries.push(entry.file_name());
    }
    let [only] = entries.as_slice() else {
        return Err(format!("channel tarball '{}' contains more than one file", arg(src.display())));
    };
    let (from, to) = (out.join(only), out.join(channel_name));
    std::fs::rename(&from, &to).map_err(|e| {
        if cx.new_wording() {
            sys_error(format!("failed to rename {} to {}", arg(from.display()), arg(to.display())), &e)
        } else {
            sys_error("renaming channel directory", &e)
        }
    })
}

/// The compressions recognised, by their magic numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

fn extract_error(reason: impl std::fmt::Display) -> String {
    format!("failed to extract archive ({reason})")
}

/// Unpacks the (possibly compressed) tar archive `file` into `dest`.
pub fn unpack_tarball(file: &Path, dest: &Path) -> Result<(), String> {
    let open_error = |e: &dyn std::fmt::Display| format!("failed to open archive: {e}");
    let f = std::fs::File::open(file).map_err(|e| open_error(&format!("Failed to open '{}': {e}", file.display())))?;
    let mut reader = BufReader::with_capacity(64 * 1024, f);
    let head = reader.fill_buf().map_err(|e| open_error(&e))?;
    let input: Box<dyn Read> = match sniff(head) {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(reader)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(|e| open_error(&e))?),
    };
    unpack_tar(input, dest)
}

/// Unpacks a tar stream into `dest` (which exists), keeping every entry
/// inside it. Directories are finished last, deepest first, so that a
/// read-only one does not stop its own contents from being written.
fn unpack_tar(input: impl Read, dest: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut directories = Vec::new();
    for entry in archive.entries().map_err(extract_error)? {
        let mut entry = entry.map_err(extract_error)?;
        let path = entry.path().map_err(extract_error)?.into_owned();
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(extract_error("Path contains '..'"));
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            return Err(extract_error(format!(
                "'{}' is a device file or a FIFO, which a store path cannot hold",
                path.display()
            )));
        }
        if let Some(target) = entry.link_name().map_err(extract_error)?
            && kind.is_hard_link()
            && target.components().any(|c| c == Component::ParentDir)
        {
            return Err(extract_error("Path contains '..'"));
        }
        if kind.is_dir() {
            directories.push(entry);
            continue;
        }
        // `unpack_in` refuses (with an error) to write through a symlink
        // leading out, and skips names it would not place inside.
        let placed = entry.unpack_in(dest).map_err(extract_error)?;
        if !placed {
            return Err(extract_error(format!("cannot place '{}' inside the output", path.display())));
        }
    }
    directories.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut dir in directories {
        dir.unpack_in(dest).map_err(extract_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A tar entry header with a raw name (the `tar` crate's builder
    /// refuses the hostile names these tests need).
    fn header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(1);
        h.set_cksum();
        h
    }

    /// A tar archive of `(name, kind, contents or link target)`.
    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let is_link = kind.is_symlink() || kind.is_hard_link();
            let body: &[u8] = if kind.is_file() { data.as_bytes() } else { &[] };
            let h = header(name, *kind, body.len() as u64, is_link.then_some(*data));
            b.append(&h, body).unwrap();
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType as T;

    fn channel_tar() -> Vec<u8> {
        tar_of(&[
            ("nixexprs/", T::Directory, ""),
            ("nixexprs/default.nix", T::Regular, "{ }\n"),
            ("nixexprs/lib/", T::Directory, ""),
            ("nixexprs/lib/a.nix", T::Regular, "1\n"),
            ("nixexprs/link", T::Symlink, "lib/a.nix"),
        ])
    }

    fn compress(data: &[u8], how: Compression) -> Vec<u8> {
        match how {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::stream::encode_all(data, 1).unwrap(),
        }
    }

    fn env(out: &Path, name: &str, src: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b"out".to_vec(), out.as_os_str().as_bytes().to_vec()),
            (b"channelName".to_vec(), name.as_bytes().to_vec()),
            (b"src".to_vec(), src.as_os_str().as_bytes().to_vec()),
        ]
    }

    fn unpack(tmp: &Path, tarball: &[u8], name: &str) -> (PathBuf, Result<(), String>) {
        let src = tmp.join("channel.tar");
        std::fs::write(&src, tarball).unwrap();
        let out = tmp.join("out");
        let env = env(&out, name, &src);
        let r = run(&Context { env: &env, client_minor: 0 });
        (out, r)
    }

    #[test]
    fn unpacks_each_compression_and_renames_the_top_entry() {
        for how in [Compression::None, Compression::Gzip, Compression::Bzip2, Compression::Xz, Compression::Zstd] {
            let tmp = tempfile::tempdir().unwrap();
            let data = compress(&channel_tar(), how);
            assert_eq!(sniff(&data), how);
            let (out, r) = unpack(tmp.path(), &data, "mychan");
            r.unwrap_or_else(|e| panic!("{how:?}: {e}"));
            let names: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, ["mychan"], "{how:?}");
            assert_eq!(std::fs::read_to_string(out.join("mychan/default.nix")).unwrap(), "{ }\n");
            assert_eq!(std::fs::read_to_string(out.join("mychan/link")).unwrap(), "1\n");
            assert_eq!(std::fs::read_link(out.join("mychan/link")).unwrap(), Path::new("lib/a.nix"));
        }
    }

    #[test]
    fn more_or_fewer_than_one_top_entry_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let two = tar_of(&[("a", T::Regular, "a"), ("b", T::Regular, "b")]);
        let (_, r) = unpack(tmp.path(), &two, "c");
        let src = tmp.path().join("channel.tar");
        assert_eq!(r.unwrap_err(), format!("channel tarball '{}' contains more than one file", arg(src.display())));
        let tmp = tempfile::tempdir().unwrap();
        let (_, r) = unpack(tmp.path(), &tar_of(&[]), "c");
        assert!(r.unwrap_err().contains("contains more than one file"));
    }

    #[test]
    fn channel_names_with_a_slash_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, r) = unpack(tmp.path(), &channel_tar(), "../escape");
        assert_eq!(
            r.unwrap_err(),
            format!("channelName is not allowed to contain filesystem separators, got {}", arg("../escape"))
        );
        assert!(!out.exists(), "refused before anything is made");
    }

    #[test]
    fn absolute_names_land_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tar_of(&[("/abs/", T::Directory, ""), ("/abs/file", T::Regular, "x")]);
        let (out, r) = unpack(tmp.path(), &t, "c");
        r.unwrap();
        assert_eq!(std::fs::read_to_string(out.join("c/file")).unwrap(), "x");
    }

    #[test]
    fn dot_dot_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tar_of(&[("top/", T::Directory, ""), ("top/../../escaped", T::Regular, "x")]);
        let (_, r) = unpack(tmp.path(), &t, "c");
        assert_eq!(r.unwrap_err(), "failed to extract archive (Path contains '..')");
        assert!(!tmp.path().join("escaped").exists());
    }

    #[test]
    fn nothing_is_written_through_a_symlink_leading_out() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let t = tar_of(&[
            ("top/", T::Directory, ""),
            ("top/link", T::Symlink, outside.to_str().unwrap()),
            ("top/link/planted", T::Regular, "x"),
        ]);
        let (_, r) = unpack(tmp.path(), &t, "c");
        assert!(r.unwrap_err().starts_with("failed to extract archive ("));
        assert!(!outside.join("planted").exists(), "wrote through the symlink");
    }

    #[test]
    fn hard_links_must_point_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        let t = tar_of(&[("top/", T::Directory, ""), ("top/hl", T::Link, "../secret")]);
        let (_, r) = unpack(tmp.path(), &t, "c");
        assert_eq!(r.unwrap_err(), "failed to extract archive (Path contains '..')");
        // An absolute target is taken inside the output, where it is missing.
        let tmp2 = tempfile::tempdir().unwrap();
        let t = tar_of(&[("top/", T::Directory, ""), ("top/hl", T::Link, secret.to_str().unwrap())]);
        let (out, r) = unpack(tmp2.path(), &t, "c");
        assert!(r.is_err(), "linked to {:?}", std::fs::read_link(out.join("top/hl")));
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1, "the outside file gained a link");
        // Inside is fine.
        let tmp3 = tempfile::tempdir().unwrap();
        let t = tar_of(&[("top/", T::Directory, ""), ("top/f", T::Regular, "data"), ("top/hl", T::Link, "top/f")]);
        let (out, r) = unpack(tmp3.path(), &t, "c");
        r.unwrap();
        assert_eq!(std::fs::read_to_string(out.join("c/hl")).unwrap(), "data");
    }

    #[test]
    fn device_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tar_of(&[("top/", T::Directory, ""), ("top/fifo", T::Fifo, "")]);
        let (_, r) = unpack(tmp.path(), &t, "c");
        assert!(r.unwrap_err().contains("device file or a FIFO"));
    }

    #[test]
    fn read_only_directories_are_filled_before_they_are_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header("top/", T::Directory, 0, None);
        h.set_mode(0o555);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        b.append(&header("top/f", T::Regular, 1, None), &b"x"[..]).unwrap();
        let (out, r) = unpack(tmp.path(), &b.into_inner().unwrap(), "c");
        r.unwrap();
        assert_eq!(std::fs::read_to_string(out.join("c/f")).unwrap(), "x");
    }

    #[test]
    fn garbage_is_an_extraction_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, r) = unpack(tmp.path(), &[0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "c");
        assert!(r.unwrap_err().starts_with("failed to extract archive ("));
    }

    use std::os::unix::fs::MetadataExt;
}
