//! Stored names of the backend-neutral enums: each variant's lower-case name, the one the
//! database, the JSON and the API use. Backends map the enums through these (PostgreSQL to its
//! enum types), so the neutral types carry no backend derives.

/// Gives an enum `as_str`, `FromStr` (an unknown name is a [`UnknownName`]) and `Display` from
/// a table of `Variant => "name"`.
macro_rules! stored_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::names::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    _ => Err($crate::names::UnknownName {
                        what: stringify!($ty),
                        name: s.to_owned(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use stored_names;

/// A stored name no variant has (a database written by a newer version, or a corrupt row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}")]
pub struct UnknownName {
    /// The enum.
    pub what: &'static str,
    /// The name found.
    pub name: String,
}
