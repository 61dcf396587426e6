//! [`Name`]: the name of a task, a queue or a worker, as envelopes and run
//! states carry it.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// A name that envelopes and run states share. Every task's states and
/// envelope copy their names, on every thread: a name known for the whole
/// program (a registered task's, its queue's) is copied as a reference,
/// with no counter for the threads to contend for; any other is shared by
/// reference counting.
///
/// It reads as a `str`:
///
/// ```
/// use orcastra::task::Name;
///
/// let known = Name::from_static("resize");
/// let read: Name = String::from("resize").into();
/// assert_eq!(known, read);
/// assert_eq!(&*read, "resize");
/// assert!(known.starts_with("re"));
/// ```
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    /// A name known for the whole program.
    pub const fn from_static(name: &'static str) -> Self {
        Name(Repr::Static(name))
    }
}

/// The empty name.
impl Default for Name {
    fn default() -> Self {
        Name::from_static("")
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        match &self.0 {
            Repr::Static(name) => name,
            Repr::Shared(name) => name,
        }
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self
    }
}

/// Looks up maps keyed by names with a `&str`.
impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self
    }
}

impl From<&str> for Name {
    fn from(name: &str) -> Self {
        Name(Repr::Shared(name.into()))
    }
}

impl From<String> for Name {
    fn from(name: String) -> Self {
        Name(Repr::Shared(name.into()))
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Name {}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &**self == *other
    }
}

/// As its `str` hashes, for [`Borrow<str>`].
impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}
