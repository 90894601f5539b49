//! File operations confined to the workspace roots (spec/chattool.md §9.5–§9.7, §10.4).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a file operation failed. The texts are what the model eventually reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The path leaves every root (`path "<path>" is outside the workspace root "<root>"`).
    #[error("path \"{path}\" is outside the workspace root \"{root}\"")]
    Outside {
        /// The path as given.
        path: String,
        /// The primary root.
        root: String,
    },
    /// No such file.
    #[error("file not found: {0}")]
    NotFound(String),
    /// The path is a directory.
    #[error("{0} is a directory")]
    IsDirectory(String),
    /// A malformed request (the §9.7 texts for edits).
    #[error("{0}")]
    Invalid(String),
    /// An edit's text was not found or is ambiguous (the §9.7 texts).
    #[error("{0}")]
    Precondition(String),
    /// The operating system refused.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        message: String,
    },
}

fn io(path: &Path, err: std::io::Error) -> FileError {
    if err.kind() == std::io::ErrorKind::NotFound {
        return FileError::NotFound(path.display().to_string());
    }
    FileError::Io {
        path: path.display().to_string(),
        message: err.to_string(),
    }
}

/// Where file operations may reach.
#[derive(Debug, Clone)]
pub struct FileRoots {
    /// The working directory (relative paths resolve against it), then any extra roots.
    pub roots: Vec<PathBuf>,
    /// Whether paths are confined to the roots.
    pub confine: bool,
}

impl FileRoots {
    /// The primary root.
    pub fn primary(&self) -> &Path {
        self.roots.first().map_or(Path::new("/"), PathBuf::as_path)
    }

    /// Resolves `path` against the primary root and, when confined, checks it stays inside a
    /// root: lexically first, then with symlinks of the longest existing prefix resolved.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, FileError> {
        if path.trim().is_empty() {
            return Err(FileError::Invalid("path is required".into()));
        }
        let joined = self.primary().join(path);
        let normal = normalize(&joined);
        if !self.confine {
            return Ok(normal);
        }
        let outside = || FileError::Outside {
            path: path.to_owned(),
            root: self.primary().display().to_string(),
        };
        let canonical_roots: Vec<PathBuf> = self
            .roots
            .iter()
            .map(|r| fs::canonicalize(r).unwrap_or_else(|_| normalize(r)))
            .collect();
        let inside = |p: &Path| canonical_roots.iter().any(|r| p.starts_with(r));
        let lexical_roots: Vec<PathBuf> = self.roots.iter().map(|r| normalize(r)).collect();
        if !lexical_roots.iter().any(|r| normal.starts_with(r)) && !inside(&normal) {
            return Err(outside());
        }
        // Canonicalise the longest existing prefix, then re-append the rest.
        let mut existing = normal.clone();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (
                existing.file_name().map(ToOwned::to_owned),
                existing.parent(),
            ) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    existing = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut canonical = fs::canonicalize(&existing).map_err(|e| io(&existing, e))?;
        for name in rest.iter().rev() {
            canonical.push(name);
        }
        if !inside(&canonical) {
            return Err(outside());
        }
        Ok(canonical)
    }
}

/// Lexical normalisation: removes `.` and resolves `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// What `read_file` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// The lines, each numbered: the line number right-aligned to 6 columns, a tab, the line.
    pub content: String,
    /// File size in bytes.
    pub file_size: u64,
    /// Lines returned.
    pub lines_read: u64,
    /// Lines in the file.
    pub total_lines: u64,
}

/// Default number of lines `read_file` returns.
pub const DEFAULT_READ_LIMIT: u64 = 2000;

/// The largest file `read_file` and `edit_files` read (32 MiB): a bigger one is refused with a
/// hint instead of filling the agent's memory. `execute` with `head`, `tail` or `sed` reads
/// parts of it.
pub const MAX_FILE_BYTES: u64 = 32 << 20;

/// Reads a regular file whole. Anything else is refused without blocking: a pipe (opened
/// non-blocking, so a FIFO without a writer cannot hang the agent), a socket, a device; so is a
/// file over [`MAX_FILE_BYTES`], also when it grows while it is read. `shown` is the path as
/// the caller gave it.
fn read_regular(path: &Path, shown: &str) -> Result<Vec<u8>, FileError> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| io(path, e))?;
    let meta = file.metadata().map_err(|e| io(path, e))?;
    if meta.is_dir() {
        return Err(FileError::IsDirectory(shown.to_owned()));
    }
    if !meta.is_file() {
        return Err(FileError::Invalid(format!(
            "{shown} is not a regular file (a pipe, socket or device); only regular files are read"
        )));
    }
    let too_big = || {
        FileError::Invalid(format!(
            "{shown} is larger than {} MiB; read parts of it with execute (head, tail, sed)",
            MAX_FILE_BYTES >> 20
        ))
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    (&mut file)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io(path, e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Reads lines `offset..offset+limit` (1-based; values below 1 take the defaults).
pub fn read_file(
    roots: &FileRoots,
    path: &str,
    offset: i64,
    limit: i64,
) -> Result<ReadResult, FileError> {
    let resolved = roots.resolve(path)?;
    let bytes = read_regular(&resolved, path)?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let offset = if offset < 1 { 1 } else { offset as u64 };
    let limit = if limit < 1 {
        DEFAULT_READ_LIMIT
    } else {
        limit as u64
    };
    let mut content = String::new();
    let mut read = 0;
    for (i, line) in lines
        .iter()
        .enumerate()
        .skip((offset - 1) as usize)
        .take(limit as usize)
    {
        content.push_str(&format!("{:>6}\t{line}\n", i + 1));
        read += 1;
    }
    Ok(ReadResult {
        content,
        file_size: bytes.len() as u64,
        lines_read: read,
        total_lines: lines.len() as u64,
    })
}

/// Writes a file atomically: a temporary file in the same directory, renamed over the target.
/// Missing parent directories are created; an existing file keeps its permissions (0644
/// otherwise). A final-component symlink is replaced, never followed.
pub fn write_file(roots: &FileRoots, path: &str, content: &[u8]) -> Result<(), FileError> {
    let resolved = roots.resolve(path)?;
    write_atomic(&resolved, content)
}

fn write_atomic(target: &Path, content: &[u8]) -> Result<(), FileError> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let mode = fs::symlink_metadata(target)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0o644, |m| m.permissions().mode());
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    // Unique per write, so concurrent writes of one file never share a temporary file.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let temp = parent.join(format!(
        ".{name}.wsagent-{}-{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::set_permissions(&temp, fs::Permissions::from_mode(mode))?;
        fs::rename(&temp, target)
    })();
    if let Err(err) = result {
        let _ = fs::remove_file(&temp);
        return Err(io(target, err));
    }
    Ok(())
}

/// One requested replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// File path.
    pub path: String,
    /// Text to find.
    pub old_text: String,
    /// Replacement.
    pub new_text: String,
    /// Replace every match instead of requiring exactly one.
    pub replace_all: bool,
}

/// A changed file and its unified diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditedFile {
    /// The path as given.
    pub path: String,
    /// Unified diff.
    pub diff: String,
}

/// Applies a batch of edits, all or nothing (spec/chattool.md §9.7): edits are grouped by path
/// and applied in order within a file; each edit matches exactly, else line-wise ignoring
/// trailing whitespace, else line-wise ignoring surrounding whitespace; without `replace_all` the
/// match must be unique. Every new content is computed before anything is written; an I/O
/// failure mid-batch restores the files already written.
pub fn edit_files(roots: &FileRoots, edits: &[Edit]) -> Result<Vec<EditedFile>, FileError> {
    if edits.is_empty() {
        return Err(FileError::Invalid("Add at least one edit to edits".into()));
    }
    // Group by path, keeping first-appearance order and the edits' indices.
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<(usize, &Edit)>> = BTreeMap::new();
    for (i, edit) in edits.iter().enumerate() {
        if edit.path.trim().is_empty() {
            return Err(FileError::Invalid(format!("edits[{i}].path is required")));
        }
        if !groups.contains_key(&edit.path) {
            order.push(edit.path.clone());
        }
        groups.entry(edit.path.clone()).or_default().push((i, edit));
    }
    let mut planned: Vec<(String, PathBuf, String, String)> = Vec::new();
    for path in &order {
        let resolved = roots.resolve(path)?;
        let original = String::from_utf8(read_regular(&resolved, path)?).map_err(|_| {
            FileError::Invalid(format!(
                "{path} is not UTF-8 text; edit_files edits text files"
            ))
        })?;
        let mut content = original.clone();
        for (i, edit) in &groups[path] {
            content = apply_edit(&content, edit).map_err(|e| match e {
                MatchError::NotFound => FileError::Precondition(format!("edits[{i}]: old_text not found in {path}")),
                MatchError::Ambiguous(n) => FileError::Precondition(format!(
                    "edits[{i}]: old_text matches {n} locations in {path}; add more context or set replace_all"
                )),
            })?;
        }
        planned.push((path.clone(), resolved, original, content));
    }
    let mut written: Vec<(&PathBuf, &String)> = Vec::new();
    for (_, resolved, original, content) in &planned {
        if let Err(err) = write_atomic(resolved, content.as_bytes()) {
            for (path, before) in written {
                let _ = write_atomic(path, before.as_bytes());
            }
            return Err(err);
        }
        written.push((resolved, original));
    }
    Ok(planned
        .into_iter()
        .map(|(path, _, original, content)| {
            let diff = similar::TextDiff::from_lines(&original, &content)
                .unified_diff()
                .header(&format!("a/{path}"), &format!("b/{path}"))
                .to_string();
            EditedFile { path, diff }
        })
        .collect())
}

#[derive(Debug, PartialEq, Eq)]
enum MatchError {
    NotFound,
    Ambiguous(usize),
}

fn apply_edit(content: &str, edit: &Edit) -> Result<String, MatchError> {
    // 1. Exact substring.
    let exact = content.matches(edit.old_text.as_str()).count();
    if !edit.old_text.is_empty() && exact > 0 {
        if exact > 1 && !edit.replace_all {
            return Err(MatchError::Ambiguous(exact));
        }
        return Ok(if edit.replace_all {
            content.replace(&edit.old_text, &edit.new_text)
        } else {
            content.replacen(&edit.old_text, &edit.new_text, 1)
        });
    }
    // 2. and 3. Line-wise, ignoring trailing, then surrounding whitespace.
    for trim in [str::trim_end as fn(&str) -> &str, str::trim] {
        if let Some(result) = replace_lines(content, edit, trim)? {
            return Ok(result);
        }
    }
    Err(MatchError::NotFound)
}

/// Replaces the line ranges whose lines equal `old_text`'s lines under `trim`.
fn replace_lines(
    content: &str,
    edit: &Edit,
    trim: fn(&str) -> &str,
) -> Result<Option<String>, MatchError> {
    let needle: Vec<&str> = edit.old_text.lines().map(trim).collect();
    if needle.is_empty() || needle.iter().all(|l| l.is_empty()) {
        return Ok(None);
    }
    let lines: Vec<&str> = content.split_inclusive('\n').collect();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + needle.len() <= lines.len() {
        if (0..needle.len()).all(|k| trim(lines[i + k].trim_end_matches(['\n', '\r'])) == needle[k])
        {
            starts.push(i);
            i += needle.len();
        } else {
            i += 1;
        }
    }
    if starts.is_empty() {
        return Ok(None);
    }
    if starts.len() > 1 && !edit.replace_all {
        return Err(MatchError::Ambiguous(starts.len()));
    }
    let mut out = String::new();
    let mut next = 0;
    for start in starts {
        out.extend(lines[next..start].iter().copied());
        let last = lines[start + needle.len() - 1];
        out.push_str(&edit.new_text);
        if last.ends_with('\n') && !edit.new_text.ends_with('\n') {
            out.push('\n');
        }
        next = start + needle.len();
    }
    out.extend(lines[next..].iter().copied());
    Ok(Some(out))
}
