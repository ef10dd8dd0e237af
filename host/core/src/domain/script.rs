//! Startup scripts: the operating systems they target and how a template can be wrong.

use serde::{Deserialize, Serialize};

/// The operating system of a server, and so the shell of its startup script.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Os {
    /// Scripts run in bash.
    Linux,
    /// Scripts run in PowerShell.
    Windows,
}

/// What is wrong with a template, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message} (line {line}, column {column})")]
pub struct TemplateError {
    pub kind: TemplateErrorKind,
    /// Byte offset in the template.
    pub offset: u32,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    pub message: String,
}

/// The kinds of [`TemplateError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateErrorKind {
    UnknownVariable,
    UnbalancedBrace,
    UnknownFilter,
    UnsafeValue,
}
