//! Template versions for the local backend: a directory holding `template.toml` and the files
//! copied into every new workspace.
//!
//! ```toml
//! name = "shell"
//! display_name = "Shell"
//! description = "A plain shell workspace."
//!
//! [agent]
//! startup_script = "echo ready"
//! startup_script_timeout = "5m"
//!
//! [build]
//! script = "mkdir -p projects"
//!
//! [[parameters]]
//! name = "greeting"
//! type = "string"
//! default = "hello"
//! mutable = true
//!
//! [[presets]]
//! name = "friendly"
//! default = true
//! parameters = { greeting = "hi" }
//! ```
//!
//! [`TemplateDir::load`] reads and validates a directory; [`Manifest::to_proto`] and
//! [`Manifest::from_proto`] convert to and from `chatd.v1.TemplateManifest` (what
//! `TemplateService.PushTemplateVersion` carries); [`new_version`] turns a validated push into
//! what the store keeps; [`resolve_parameters`] checks a build's parameter values against the
//! declarations and fills in defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use chatproto::chatd::v1 as pb;
use chatstore::templates::{NewTemplateVersion, TemplateParameter, TemplatePreset};
use serde::{Deserialize, Serialize};

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "template.toml";
/// The most bytes of files one template version may hold (the gRPC message limit is 4 MiB).
pub const MAX_TEMPLATE_BYTES: usize = 3 * 1024 * 1024;
/// The most files one template version may hold.
pub const MAX_TEMPLATE_FILES: usize = 1000;

/// What is wrong with a template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The directory or a file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `template.toml` is not valid TOML or has unknown or mistyped keys.
    #[error("{path}: {message}")]
    Syntax {
        /// The manifest's path.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The declarations are inconsistent; every problem is listed.
    #[error("invalid template: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// `template.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Template name: 1–32 ASCII letters, digits and single hyphens.
    pub name: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// README (Markdown); when absent, `README.md` of the directory.
    #[serde(default)]
    pub readme: String,
    /// The agent is managed outside chatd (the provisioner starts none).
    #[serde(default)]
    pub external_agent: bool,
    /// The agent's settings.
    #[serde(default)]
    pub agent: AgentSpec,
    /// The build step.
    #[serde(default)]
    pub build: BuildSpec,
    /// Declared parameters.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Offered presets.
    #[serde(default)]
    pub presets: Vec<Preset>,
}

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSpec {
    /// Agent name (`main`).
    pub name: String,
    /// Working directory relative to the workspace directory (empty = the workspace
    /// directory itself).
    pub directory: String,
    /// Run by the agent once it starts (empty = none).
    pub startup_script: String,
    /// The startup script's limit (`5m`; `0s` = none).
    #[serde(with = "duration_text")]
    pub startup_script_timeout: Duration,
    /// How long the agent may take to connect before it counts as timed out (`2m`).
    #[serde(with = "duration_text")]
    pub connection_timeout: Duration,
    /// Extra environment of the agent and its processes.
    pub env: BTreeMap<String, String>,
}

impl Default for AgentSpec {
    fn default() -> Self {
        Self {
            name: "main".into(),
            directory: String::new(),
            startup_script: String::new(),
            startup_script_timeout: Duration::from_secs(5 * 60),
            connection_timeout: Duration::from_secs(2 * 60),
            env: BTreeMap::new(),
        }
    }
}

/// `[build]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildSpec {
    /// Run with `sh -c` in the workspace directory by a start build (empty = none).
    pub script: String,
    /// Its limit (`10m`).
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

impl Default for BuildSpec {
    fn default() -> Self {
        Self {
            script: String::new(),
            timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ParameterType {
    /// Any text.
    #[default]
    #[serde(rename = "string")]
    String,
    /// An integer.
    #[serde(rename = "number")]
    Number,
    /// `true` or `false`.
    #[serde(rename = "bool")]
    Bool,
    /// A JSON array of strings.
    #[serde(rename = "list(string)")]
    ListString,
}

impl ParameterType {
    /// The name used in manifests and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Bool => "bool",
            Self::ListString => "list(string)",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "" | "string" => Self::String,
            "number" => Self::Number,
            "bool" => Self::Bool,
            "list(string)" => Self::ListString,
            _ => return None,
        })
    }
}

/// `[[parameters]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// Name, unique within the version.
    pub name: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Type (`string` by default).
    #[serde(default, rename = "type")]
    pub kind: ParameterType,
    /// Default value; without one the parameter is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// May change after the workspace is created.
    #[serde(default)]
    pub mutable: bool,
    /// Used for one build only.
    #[serde(default)]
    pub ephemeral: bool,
    /// Allowed values (empty = any).
    #[serde(default)]
    pub options: Vec<ParameterOption>,
    /// Constraints on the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
}

/// One allowed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterOption {
    /// Label.
    pub name: String,
    /// Value.
    pub value: String,
    /// Description.
    #[serde(default)]
    pub description: String,
}

/// `[parameters.validation]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// A regular expression a string value must match.
    #[serde(default)]
    pub regex: String,
    /// Smallest number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    /// Largest number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
    /// Message shown when the value is refused.
    #[serde(default)]
    pub error: String,
}

/// `[[presets]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Name, unique within the version.
    pub name: String,
    /// The preset used when none is chosen (at most one).
    #[serde(default)]
    pub default: bool,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Parameter values; each must name a declared parameter.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

/// One file of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateFile {
    /// `/`-separated path relative to the template directory.
    pub path: String,
    /// Contents (base64 in JSON).
    #[serde(with = "base64_bytes")]
    pub content: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// A template directory, read and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateDir {
    /// The manifest.
    pub manifest: Manifest,
    /// Every file of the directory except the manifest (hidden entries such as `.git` are
    /// skipped).
    pub files: Vec<TemplateFile>,
}

impl TemplateDir {
    /// Reads `dir/template.toml` and the directory's files, and validates them.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| TemplateError::Io {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest = Manifest::parse(&text).map_err(|message| TemplateError::Syntax {
            path: manifest_path,
            message,
        })?;
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files)?;
        files.retain(|f| f.path != MANIFEST_FILE);
        Self::assemble(manifest, files)
    }

    /// A template directory sent as files (a client that uploads the directory as it is):
    /// `template.toml` among them is the manifest, the rest are the files. Validated like
    /// [`TemplateDir::load`].
    pub fn from_files(mut files: Vec<TemplateFile>) -> Result<Self, TemplateError> {
        let syntax = |message: String| TemplateError::Syntax {
            path: PathBuf::from(MANIFEST_FILE),
            message,
        };
        let position = files
            .iter()
            .position(|f| f.path == MANIFEST_FILE)
            .ok_or_else(|| {
                TemplateError::Invalid(vec![format!(
                    "the template has no {MANIFEST_FILE} (send it among the files, or send a manifest)"
                )])
            })?;
        let text = String::from_utf8(files.remove(position).content)
            .map_err(|_| syntax("the manifest is not UTF-8 text".into()))?;
        let manifest = Manifest::parse(&text).map_err(syntax)?;
        Self::assemble(manifest, files)
    }

    /// Orders the files, takes the README as the manifest's when it has none, and validates.
    fn assemble(
        mut manifest: Manifest,
        mut files: Vec<TemplateFile>,
    ) -> Result<Self, TemplateError> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if manifest.readme.is_empty()
            && let Some(readme) = files.iter().find(|f| f.path == "README.md")
        {
            manifest.readme = String::from_utf8_lossy(&readme.content).into_owned();
        }
        let template = Self { manifest, files };
        template.validate()?;
        Ok(template)
    }

    /// Checks the manifest and the files together.
    pub fn validate(&self) -> Result<(), TemplateError> {
        let mut problems = self.manifest.problems();
        problems.extend(file_problems(&self.files));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TemplateError::Invalid(problems))
        }
    }
}

fn collect_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<TemplateFile>,
) -> Result<(), TemplateError> {
    use std::os::unix::fs::PermissionsExt as _;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TemplateError::Io { path, source }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        if meta.is_dir() {
            collect_files(root, &path, out)?;
        } else if meta.is_file() {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push(TemplateFile {
                path: relative,
                content: std::fs::read(&path).map_err(io(&path))?,
                mode: meta.permissions().mode() & 0o777,
            });
        }
    }
    Ok(())
}

fn file_problems(files: &[TemplateFile]) -> Vec<String> {
    let mut problems = Vec::new();
    if files.len() > MAX_TEMPLATE_FILES {
        problems.push(format!(
            "the template has {} files; at most {MAX_TEMPLATE_FILES} are allowed",
            files.len()
        ));
    }
    let total: usize = files.iter().map(|f| f.content.len()).sum();
    if total > MAX_TEMPLATE_BYTES {
        problems.push(format!(
            "the template's files hold {total} bytes; at most {MAX_TEMPLATE_BYTES} are allowed"
        ));
    }
    let mut seen = BTreeSet::new();
    for file in files {
        if let Err(why) = relative_path(&file.path) {
            problems.push(format!("file {:?}: {why}", file.path));
        }
        if !seen.insert(file.path.as_str()) {
            problems.push(format!("file {:?} appears twice", file.path));
        }
    }
    problems
}

/// Checks that `path` is relative and stays inside the directory it is joined to.
pub fn relative_path(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    let p = Path::new(path);
    let mut clean = PathBuf::new();
    for component in p.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path must not contain `..`".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("the path must be relative".into());
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err("the path names no file".into());
    }
    Ok(clean)
}

pub use chatstore::workspaces::valid_name;

impl Manifest {
    /// Parses `template.toml` text (syntax and types only; see [`Manifest::problems`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Every inconsistency of the declarations (empty = valid).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !valid_name(&self.name) {
            problems.push(format!(
                "template name {:?} must be 1–32 ASCII letters and digits in runs separated by single hyphens",
                self.name
            ));
        }
        if self.agent.name.trim().is_empty() {
            problems.push("agent.name must not be empty".into());
        }
        if !self.agent.directory.is_empty()
            && let Err(why) = relative_path(&self.agent.directory)
        {
            problems.push(format!("agent.directory: {why}"));
        }
        let mut names = BTreeSet::new();
        for p in &self.parameters {
            if p.name.trim().is_empty() {
                problems.push("a parameter has an empty name".into());
            }
            if !names.insert(p.name.as_str()) {
                problems.push(format!("parameter {:?} is declared twice", p.name));
            }
            if let Some(v) = &p.validation
                && !v.regex.is_empty()
                && let Err(e) = regex::Regex::new(&v.regex)
            {
                problems.push(format!("parameter {:?}: invalid regex: {e}", p.name));
            }
            if let Some(default) = &p.default
                && let Err(why) = check_value(p, default)
            {
                problems.push(format!(
                    "parameter {:?}: default {default:?}: {why}",
                    p.name
                ));
            }
        }
        let mut presets = BTreeSet::new();
        for preset in &self.presets {
            if !presets.insert(preset.name.as_str()) {
                problems.push(format!("preset {:?} is declared twice", preset.name));
            }
            for (name, value) in &preset.parameters {
                match self.parameters.iter().find(|p| &p.name == name) {
                    None => problems.push(format!(
                        "preset {:?} sets {name:?}, which is not a declared parameter",
                        preset.name
                    )),
                    Some(p) => {
                        if let Err(why) = check_value(p, value) {
                            problems.push(format!(
                                "preset {:?}: {name} = {value:?}: {why}",
                                preset.name
                            ));
                        }
                    }
                }
            }
        }
        let defaults = self.presets.iter().filter(|p| p.default).count();
        if defaults > 1 {
            problems.push(format!(
                "{defaults} presets are marked default; at most one may be"
            ));
        }
        problems
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::TemplateManifest {
        pb::TemplateManifest {
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            readme: self.readme.clone(),
            has_external_agent: self.external_agent,
            agent: Some(pb::TemplateAgentSpec {
                name: self.agent.name.clone(),
                directory: self.agent.directory.clone(),
                startup_script: self.agent.startup_script.clone(),
                startup_script_timeout: self.agent.startup_script_timeout.try_into().ok(),
                connection_timeout: self.agent.connection_timeout.try_into().ok(),
                env: self.agent.env.clone().into_iter().collect(),
            }),
            parameters: self
                .parameters
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let v = p.validation.clone().unwrap_or_default();
                    pb::TemplateParameter {
                        name: p.name.clone(),
                        display_name: p.display_name.clone(),
                        description: p.description.clone(),
                        r#type: p.kind.as_str().into(),
                        form_type: String::new(),
                        mutable: p.mutable,
                        ephemeral: p.ephemeral,
                        default_value: p.default.clone(),
                        required: p.default.is_none(),
                        options: p
                            .options
                            .iter()
                            .map(|o| pb::TemplateParameterOption {
                                name: o.name.clone(),
                                value: o.value.clone(),
                                description: o.description.clone(),
                                icon: String::new(),
                            })
                            .collect(),
                        validation_regex: v.regex,
                        validation_min: v.min,
                        validation_max: v.max,
                        validation_error: v.error,
                        display_order: i32::try_from(i).unwrap_or(i32::MAX),
                    }
                })
                .collect(),
            presets: self
                .presets
                .iter()
                .map(|p| pb::TemplatePreset {
                    id: String::new(),
                    name: p.name.clone(),
                    is_default: p.default,
                    description: p.description.clone(),
                    icon: String::new(),
                    parameters: p
                        .parameters
                        .iter()
                        .map(|(name, value)| pb::ParameterValue {
                            name: name.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                })
                .collect(),
            build: Some(pb::TemplateBuildSpec {
                script: self.build.script.clone(),
                timeout: self.build.timeout.try_into().ok(),
            }),
        }
    }

    /// Reads the wire form back; `Err` lists what cannot be represented (an unknown parameter
    /// type, a negative duration).
    pub fn from_proto(m: &pb::TemplateManifest) -> Result<Self, TemplateError> {
        let mut problems = Vec::new();
        let duration = |d: Option<chatproto::prost_types::Duration>,
                        default: Duration,
                        what: &str,
                        problems: &mut Vec<String>| match d {
            None => default,
            Some(d) => Duration::try_from(d).unwrap_or_else(|_| {
                problems.push(format!("{what} must not be negative"));
                default
            }),
        };
        let defaults = AgentSpec::default();
        let agent = match &m.agent {
            None => defaults,
            Some(a) => AgentSpec {
                name: if a.name.is_empty() {
                    defaults.name
                } else {
                    a.name.clone()
                },
                directory: a.directory.clone(),
                startup_script: a.startup_script.clone(),
                startup_script_timeout: duration(
                    a.startup_script_timeout,
                    defaults.startup_script_timeout,
                    "agent.startup_script_timeout",
                    &mut problems,
                ),
                connection_timeout: duration(
                    a.connection_timeout,
                    defaults.connection_timeout,
                    "agent.connection_timeout",
                    &mut problems,
                ),
                env: a.env.clone().into_iter().collect(),
            },
        };
        let build_defaults = BuildSpec::default();
        let build = match &m.build {
            None => build_defaults,
            Some(b) => BuildSpec {
                script: b.script.clone(),
                timeout: duration(
                    b.timeout,
                    build_defaults.timeout,
                    "build.timeout",
                    &mut problems,
                ),
            },
        };
        let parameters = m
            .parameters
            .iter()
            .map(|p| {
                let kind = ParameterType::parse(&p.r#type).unwrap_or_else(|| {
                    problems.push(format!(
                        "parameter {:?}: unknown type {:?} (string, number, bool, list(string))",
                        p.name, p.r#type
                    ));
                    ParameterType::String
                });
                let validation = (!p.validation_regex.is_empty()
                    || p.validation_min.is_some()
                    || p.validation_max.is_some()
                    || !p.validation_error.is_empty())
                .then(|| Validation {
                    regex: p.validation_regex.clone(),
                    min: p.validation_min,
                    max: p.validation_max,
                    error: p.validation_error.clone(),
                });
                Parameter {
                    name: p.name.clone(),
                    display_name: p.display_name.clone(),
                    description: p.description.clone(),
                    kind,
                    default: p.default_value.clone(),
                    mutable: p.mutable,
                    ephemeral: p.ephemeral,
                    options: p
                        .options
                        .iter()
                        .map(|o| ParameterOption {
                            name: o.name.clone(),
                            value: o.value.clone(),
                            description: o.description.clone(),
                        })
                        .collect(),
                    validation,
                }
            })
            .collect();
        let presets = m
            .presets
            .iter()
            .map(|p| Preset {
                name: p.name.clone(),
                default: p.is_default,
                description: p.description.clone(),
                parameters: p
                    .parameters
                    .iter()
                    .map(|v| (v.name.clone(), v.value.clone()))
                    .collect(),
            })
            .collect();
        let manifest = Self {
            name: m.name.clone(),
            display_name: m.display_name.clone(),
            description: m.description.clone(),
            readme: m.readme.clone(),
            external_agent: m.has_external_agent,
            agent,
            build,
            parameters,
            presets,
        };
        problems.extend(manifest.problems());
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(TemplateError::Invalid(problems))
        }
    }

    /// Reads the manifest a template version stores (see [`new_version`]).
    pub fn from_stored(value: &serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("stored template manifest: {e}"))
    }
}

/// Files from the wire form.
pub fn files_from_proto(files: &[pb::TemplateFile]) -> Result<Vec<TemplateFile>, TemplateError> {
    let files: Vec<TemplateFile> = files
        .iter()
        .map(|f| TemplateFile {
            path: f.path.clone(),
            content: f.content.clone(),
            mode: if f.mode == 0 { 0o644 } else { f.mode & 0o777 },
        })
        .collect();
    let problems = file_problems(&files);
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(TemplateError::Invalid(problems))
    }
}

/// Files in the wire form.
pub fn files_to_proto(files: &[TemplateFile]) -> Vec<pb::TemplateFile> {
    files
        .iter()
        .map(|f| pb::TemplateFile {
            path: f.path.clone(),
            content: f.content.clone(),
            mode: f.mode,
        })
        .collect()
}

/// Reads the files a template version stores.
pub fn files_from_stored(value: &serde_json::Value) -> Result<Vec<TemplateFile>, String> {
    serde_json::from_value(value.clone()).map_err(|e| format!("stored template files: {e}"))
}

/// What the store keeps for a validated template push.
pub fn new_version(
    organization_id: uuid::Uuid,
    manifest: &Manifest,
    files: &[TemplateFile],
    version_name: &str,
    activate: bool,
    created_by: Option<uuid::Uuid>,
) -> NewTemplateVersion {
    NewTemplateVersion {
        organization_id,
        template_name: manifest.name.clone(),
        display_name: manifest.display_name.clone().unwrap_or_default(),
        description: manifest.description.clone().unwrap_or_default(),
        version_name: version_name.to_owned(),
        readme: manifest.readme.clone(),
        has_external_agent: manifest.external_agent,
        manifest: serde_json::to_value(manifest).unwrap_or_default(),
        files: serde_json::to_value(files).unwrap_or_default(),
        parameters: manifest
            .parameters
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let v = p.validation.clone().unwrap_or_default();
                TemplateParameter {
                    name: p.name.clone(),
                    display_name: p.display_name.clone(),
                    description: p.description.clone(),
                    kind: p.kind.as_str().to_owned(),
                    mutable: p.mutable,
                    default_value: p.default.clone(),
                    options: serde_json::to_value(&p.options).unwrap_or_default(),
                    display_order: i32::try_from(i).unwrap_or(i32::MAX),
                    form_type: String::new(),
                    ephemeral: p.ephemeral,
                    validation_regex: v.regex,
                    validation_min: v.min,
                    validation_max: v.max,
                    validation_error: v.error,
                }
            })
            .collect(),
        presets: manifest
            .presets
            .iter()
            .map(|p| TemplatePreset {
                name: p.name.clone(),
                is_default: p.default,
                description: p.description.clone(),
                parameters: p.parameters.clone().into_iter().collect(),
            })
            .collect(),
        activate,
        created_by,
    }
}

fn check_value(p: &Parameter, value: &str) -> Result<(), String> {
    let refused = |why: String| match &p.validation {
        Some(v) if !v.error.is_empty() => Err(v.error.clone()),
        _ => Err(why),
    };
    match p.kind {
        ParameterType::String => {}
        ParameterType::Number => {
            let Ok(n) = value.trim().parse::<i64>() else {
                return Err(format!("{value:?} is not a whole number"));
            };
            if let Some(v) = &p.validation {
                if let Some(min) = v.min
                    && n < i64::from(min)
                {
                    return refused(format!("{n} is below the minimum {min}"));
                }
                if let Some(max) = v.max
                    && n > i64::from(max)
                {
                    return refused(format!("{n} is above the maximum {max}"));
                }
            }
        }
        ParameterType::Bool => {
            if value != "true" && value != "false" {
                return Err(format!("{value:?} is not true or false"));
            }
        }
        ParameterType::ListString => {
            if serde_json::from_str::<Vec<String>>(value).is_err() {
                return Err(format!("{value:?} is not a JSON array of strings"));
            }
        }
    }
    if !p.options.is_empty() && !p.options.iter().any(|o| o.value == value) {
        let allowed: Vec<&str> = p.options.iter().map(|o| o.value.as_str()).collect();
        return Err(format!("{value:?} is not one of the options {allowed:?}"));
    }
    if let Some(v) = &p.validation
        && !v.regex.is_empty()
        && p.kind == ParameterType::String
    {
        match regex::Regex::new(&v.regex) {
            Ok(re) if re.is_match(value) => {}
            Ok(_) => return refused(format!("{value:?} does not match {:?}", v.regex)),
            Err(e) => return Err(format!("invalid regex: {e}")),
        }
    }
    Ok(())
}

/// A build's parameter values as the store keeps them: `[{"name": …, "value": …}]`.
pub fn parameters_from_json(value: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    #[derive(Deserialize)]
    struct Value {
        name: String,
        value: String,
    }
    if value.is_null() {
        return Ok(Vec::new());
    }
    let values: Vec<Value> = serde_json::from_value(value.clone())
        .map_err(|e| format!("build parameters must be [{{\"name\", \"value\"}}]: {e}"))?;
    Ok(values.into_iter().map(|v| (v.name, v.value)).collect())
}

/// Checks `given` against the declarations and fills in defaults: every declared parameter
/// gets a value, or the error names each one that is missing, unknown or refused.
pub fn resolve_parameters(
    manifest: &Manifest,
    given: &[(String, String)],
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut problems = Vec::new();
    let mut values = BTreeMap::new();
    for (name, _) in given {
        if !manifest.parameters.iter().any(|p| &p.name == name) {
            problems.push(format!("{name:?} is not a parameter of this template"));
        }
    }
    for p in &manifest.parameters {
        let value = given
            .iter()
            .rev()
            .find(|(name, _)| name == &p.name)
            .map(|(_, v)| v.clone())
            .or_else(|| p.default.clone());
        match value {
            None => problems.push(format!("parameter {:?} is required", p.name)),
            Some(value) => match check_value(p, &value) {
                Ok(()) => {
                    values.insert(p.name.clone(), value);
                }
                Err(why) => problems.push(format!("parameter {:?}: {why}", p.name)),
            },
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

/// The environment variable carrying a parameter: `CHATD_PARAM_<NAME>` (upper case,
/// non-alphanumerics as `_`).
pub fn parameter_env_name(name: &str) -> String {
    let mut out = String::from("CHATD_PARAM_");
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    out
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\""
            ))
        })
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_minimal_manifest_takes_the_defaults() {
        let m = manifest("name = \"shell\"");
        assert_eq!(m.agent.name, "main");
        assert_eq!(m.agent.startup_script_timeout, Duration::from_secs(300));
        assert_eq!(m.build.timeout, Duration::from_secs(600));
        assert!(m.problems().is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_syntax_errors() {
        let err = Manifest::parse("name = \"x\"\ncolour = \"red\"").unwrap_err();
        assert!(err.contains("colour"), "{err}");
        let err = Manifest::parse("name = \"x\"\n[agent]\nstartup_script_timeout = \"soon\"")
            .unwrap_err();
        assert!(err.contains("is not a duration"), "{err}");
    }

    #[test]
    fn every_inconsistency_is_listed() {
        let m = manifest(
            r#"
name = "bad name"
[[parameters]]
name = "size"
type = "number"
default = "big"
[[parameters]]
name = "size"
[[presets]]
name = "a"
default = true
parameters = { colour = "red" }
[[presets]]
name = "b"
default = true
"#,
        );
        let problems = m.problems();
        let all = problems.join("\n");
        for expected in [
            "template name \"bad name\"",
            "\"big\" is not a whole number",
            "parameter \"size\" is declared twice",
            "sets \"colour\", which is not a declared parameter",
            "2 presets are marked default",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn parameters_resolve_with_defaults_and_checks() {
        let m = manifest(
            r#"
name = "t"
[[parameters]]
name = "region"
options = [{ name = "EU", value = "eu" }, { name = "US", value = "us" }]
[[parameters]]
name = "cpus"
type = "number"
default = "2"
validation = { min = 1, max = 8 }
[[parameters]]
name = "user"
default = "dev"
validation = { regex = "^[a-z]+$", error = "lower-case letters only" }
"#,
        );
        assert!(m.problems().is_empty(), "{:?}", m.problems());
        let values = resolve_parameters(&m, &[("region".into(), "eu".into())]).unwrap();
        assert_eq!(values["cpus"], "2");
        assert_eq!(values["user"], "dev");

        let problems = resolve_parameters(
            &m,
            &[
                ("cpus".into(), "9".into()),
                ("user".into(), "Dev".into()),
                ("colour".into(), "red".into()),
            ],
        )
        .unwrap_err()
        .join("\n");
        for expected in [
            "\"colour\" is not a parameter",
            "parameter \"region\" is required",
            "9 is above the maximum 8",
            "lower-case letters only",
        ] {
            assert!(
                problems.contains(expected),
                "missing {expected:?} in:\n{problems}"
            );
        }
    }

    #[test]
    fn the_wire_form_round_trips() {
        let m = manifest(
            r#"
name = "t"
display_name = "T"
[agent]
startup_script = "echo hi"
env = { A = "1" }
[build]
script = "true"
timeout = "1m"
[[parameters]]
name = "n"
type = "number"
default = "3"
mutable = true
validation = { min = 1 }
[[presets]]
name = "p"
default = true
parameters = { n = "4" }
"#,
        );
        assert_eq!(Manifest::from_proto(&m.to_proto()).unwrap(), m);
        let stored = serde_json::to_value(&m).unwrap();
        assert_eq!(Manifest::from_stored(&stored).unwrap(), m);
    }

    #[test]
    fn file_paths_must_stay_inside() {
        assert!(relative_path("a/b.txt").is_ok());
        assert!(relative_path("../x").unwrap_err().contains(".."));
        assert!(
            relative_path("/etc/passwd")
                .unwrap_err()
                .contains("relative")
        );
        assert!(relative_path("./").is_err());
        let err = files_from_proto(&[pb::TemplateFile {
            path: "../../x".into(),
            content: Vec::new(),
            mode: 0,
        }])
        .unwrap_err();
        assert!(err.to_string().contains("must not contain `..`"), "{err}");
    }

    #[test]
    fn parameter_env_names_are_shell_safe() {
        assert_eq!(
            parameter_env_name("git-repo.url"),
            "CHATD_PARAM_GIT_REPO_URL"
        );
    }

    #[test]
    fn the_example_template_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/templates/shell");
        let template = TemplateDir::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(template.manifest.name, "shell");
        assert!(!template.manifest.agent.startup_script.is_empty());
        assert!(template.files.iter().any(|f| f.path == "README.md"));
    }

    #[test]
    fn a_directory_sent_as_files_reads_like_the_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/templates/shell");
        let loaded = TemplateDir::load(&dir).unwrap();
        let mut files = loaded.files.clone();
        files.push(TemplateFile {
            path: MANIFEST_FILE.into(),
            content: std::fs::read(dir.join(MANIFEST_FILE)).unwrap(),
            mode: 0o644,
        });
        files.reverse();
        assert_eq!(TemplateDir::from_files(files).unwrap(), loaded);

        let missing = TemplateDir::from_files(loaded.files.clone()).unwrap_err();
        assert!(
            missing.to_string().contains("has no template.toml"),
            "{missing}"
        );
        let broken = vec![TemplateFile {
            path: MANIFEST_FILE.into(),
            content: b"name = [".to_vec(),
            mode: 0o644,
        }];
        assert!(matches!(
            TemplateDir::from_files(broken),
            Err(TemplateError::Syntax { .. })
        ));
    }
}
