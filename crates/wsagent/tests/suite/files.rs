//! File operations: reads, atomic writes, edit batches, and confinement to the workspace roots.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use wsagent::files::{Edit, FileError, FileRoots, edit_files, read_file, write_file};

struct Workspace {
    root: PathBuf,
    roots: FileRoots,
}

impl Workspace {
    fn new(name: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("wsagent-files-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let root = fs::canonicalize(&root).unwrap();
        Self {
            roots: FileRoots {
                roots: vec![root.clone()],
                confine: true,
            },
            root,
        }
    }

    fn put(&self, path: &str, text: &str) {
        let p = self.root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn get(&self, path: &str) -> String {
        fs::read_to_string(self.root.join(path)).unwrap()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn edit(path: &str, old: &str, new: &str) -> Edit {
    Edit {
        path: path.into(),
        old_text: old.into(),
        new_text: new.into(),
        replace_all: false,
    }
}

#[test]
fn reads_are_numbered_and_ranged() {
    let w = Workspace::new("read");
    w.put("a.txt", "one\ntwo\nthree\n");
    let all = read_file(&w.roots, "a.txt", 0, 0).unwrap();
    assert_eq!(all.content, "     1\tone\n     2\ttwo\n     3\tthree\n");
    assert_eq!((all.file_size, all.lines_read, all.total_lines), (14, 3, 3));
    let middle = read_file(&w.roots, "a.txt", 2, 1).unwrap();
    assert_eq!(middle.content, "     2\ttwo\n");
    let past = read_file(&w.roots, "a.txt", 10, 5).unwrap();
    assert_eq!((past.content.as_str(), past.lines_read), ("", 0));
    assert!(matches!(
        read_file(&w.roots, "missing.txt", 1, 1),
        Err(FileError::NotFound(_))
    ));
    fs::create_dir(w.root.join("dir")).unwrap();
    assert!(matches!(
        read_file(&w.roots, "dir", 1, 1),
        Err(FileError::IsDirectory(_))
    ));
}

#[test]
fn writes_create_parents_and_keep_permissions() {
    let w = Workspace::new("write");
    write_file(&w.roots, "deep/nested/file.txt", b"hello").unwrap();
    assert_eq!(w.get("deep/nested/file.txt"), "hello");
    let path = w.root.join("deep/nested/file.txt");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    write_file(&w.roots, "deep/nested/file.txt", b"again").unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(w.get("deep/nested/file.txt"), "again");
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(w.root.join("deep/nested")).unwrap().count(), 1);
}

#[test]
fn edits_match_exactly_then_ignoring_whitespace() {
    let w = Workspace::new("edit");
    w.put(
        "a.rs",
        "fn main() {\n    let x = 1;   \n        println!(\"{x}\");\n}\n",
    );
    // Exact.
    edit_files(&w.roots, &[edit("a.rs", "let x = 1;", "let x = 2;")]).unwrap();
    assert!(w.get("a.rs").contains("let x = 2;   \n"));
    // Trailing whitespace ignored, line-wise.
    edit_files(
        &w.roots,
        &[edit("a.rs", "    let x = 2;\n", "    let x = 3;\n")],
    )
    .unwrap();
    assert!(w.get("a.rs").contains("    let x = 3;\n"));
    // Leading and trailing whitespace ignored.
    let diffs = edit_files(
        &w.roots,
        &[edit(
            "a.rs",
            "  println!(\"{x}\");  ",
            "        println!(\"x = {x}\");",
        )],
    )
    .unwrap();
    assert!(w.get("a.rs").contains("println!(\"x = {x}\");"));
    assert!(
        diffs[0].diff.contains("-        println!(\"{x}\");"),
        "{}",
        diffs[0].diff
    );
    assert!(
        diffs[0].diff.contains("+        println!(\"x = {x}\");"),
        "{}",
        diffs[0].diff
    );
}

#[test]
fn ambiguous_missing_and_malformed_edits_change_nothing() {
    let w = Workspace::new("edit-fail");
    w.put("a.txt", "x\nx\n");
    w.put("b.txt", "b\n");
    let ambiguous = edit_files(
        &w.roots,
        &[edit("b.txt", "b", "B"), edit("a.txt", "x", "y")],
    )
    .unwrap_err();
    assert_eq!(
        ambiguous.to_string(),
        "edits[1]: old_text matches 2 locations in a.txt; add more context or set replace_all"
    );
    assert_eq!(w.get("b.txt"), "b\n", "all or nothing");
    let missing = edit_files(&w.roots, &[edit("a.txt", "zzz", "y")]).unwrap_err();
    assert_eq!(missing.to_string(), "edits[0]: old_text not found in a.txt");
    assert_eq!(
        edit_files(&w.roots, &[]).unwrap_err().to_string(),
        "Add at least one edit to edits"
    );
    assert_eq!(
        edit_files(&w.roots, &[edit(" ", "a", "b")])
            .unwrap_err()
            .to_string(),
        "edits[0].path is required"
    );
    let mut all = edit("a.txt", "x", "y");
    all.replace_all = true;
    edit_files(&w.roots, &[all]).unwrap();
    assert_eq!(w.get("a.txt"), "y\ny\n");
}

#[test]
fn edits_apply_in_order_within_a_file() {
    let w = Workspace::new("edit-order");
    w.put("a.txt", "alpha\n");
    edit_files(
        &w.roots,
        &[
            edit("a.txt", "alpha", "beta"),
            edit("a.txt", "beta", "gamma"),
        ],
    )
    .unwrap();
    assert_eq!(w.get("a.txt"), "gamma\n");
}

#[test]
fn paths_cannot_leave_the_workspace() {
    let w = Workspace::new("confine");
    fn outside<T>(r: Result<T, FileError>) -> bool {
        matches!(r, Err(FileError::Outside { .. }))
    }
    assert!(outside(read_file(&w.roots, "../../etc/passwd", 1, 1)));
    assert!(outside(read_file(&w.roots, "/etc/passwd", 1, 1)));
    let err = write_file(&w.roots, "../escape.txt", b"x").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "path \"../escape.txt\" is outside the workspace root \"{}\"",
            w.root.display()
        )
    );
    // A symlinked directory that leads outside.
    let elsewhere = std::env::temp_dir().join(format!("wsagent-elsewhere-{}", std::process::id()));
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, w.root.join("link")).unwrap();
    assert!(outside(write_file(&w.roots, "link/new.txt", b"x")));
    assert!(!elsewhere.join("new.txt").exists());
    // A final-component symlink pointing outside is refused, not followed.
    fs::write(elsewhere.join("target.txt"), "keep").unwrap();
    std::os::unix::fs::symlink(elsewhere.join("target.txt"), w.root.join("file-link")).unwrap();
    assert!(outside(write_file(&w.roots, "file-link", b"overwrite")));
    assert_eq!(
        fs::read_to_string(elsewhere.join("target.txt")).unwrap(),
        "keep"
    );
    let _ = fs::remove_dir_all(&elsewhere);
    // Inside is fine, including `..` that stays inside.
    write_file(&w.roots, "a/../b.txt", b"ok").unwrap();
    assert_eq!(w.get("b.txt"), "ok");
    // Unconfined roots allow anything.
    let free = FileRoots {
        roots: w.roots.roots.clone(),
        confine: false,
    };
    assert!(
        read_file(&free, "/etc/hostname", 1, 1).is_ok()
            || !std::path::Path::new("/etc/hostname").exists()
    );
}

/// Only regular files are read: a FIFO without a writer (which a blocking open would wait on
/// for good), a character device; a file over the cap is refused, not read whole.
#[test]
fn pipes_devices_and_huge_files_are_refused_without_blocking() {
    let w = Workspace::new("special");
    let fifo = w.root.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let huge = fs::File::create(w.root.join("huge.bin")).unwrap();
    huge.set_len(wsagent::files::MAX_FILE_BYTES + 1).unwrap();
    let devices = FileRoots {
        roots: vec![PathBuf::from("/dev")],
        confine: true,
    };
    for (roots, path, says) in [
        (&w.roots, "fifo", "not a regular file"),
        (&devices, "/dev/zero", "not a regular file"),
        (&w.roots, "huge.bin", "larger than 32 MiB"),
    ] {
        let read = read_file(roots, path, 1, 1);
        assert!(
            matches!(&read, Err(FileError::Invalid(why)) if why.contains(says)),
            "{path}: {read:?}"
        );
        let edited = edit_files(roots, &[edit(path, "a", "b")]);
        assert!(
            matches!(&edited, Err(FileError::Invalid(why)) if why.contains(says)),
            "{path}: {edited:?}"
        );
    }
}

/// Writes of one file at once each go through a temporary file of their own: every write
/// succeeds and the file ends up as one of them, whole.
#[test]
fn concurrent_writes_of_one_file_do_not_collide() {
    let w = Workspace::new("concurrent");
    let contents: Vec<String> = (0..8).map(|i| format!("{i}").repeat(10_000)).collect();
    std::thread::scope(|scope| {
        for content in &contents {
            let roots = &w.roots;
            scope.spawn(move || write_file(roots, "same.txt", content.as_bytes()).unwrap());
        }
    });
    assert!(contents.contains(&w.get("same.txt")));
    let leftovers: Vec<_> = fs::read_dir(&w.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["same.txt"], "no temporary file is left");
}
