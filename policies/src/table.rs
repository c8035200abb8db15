//! The device's path table as validation sees it.

use crate::PathId;

/// A device's paths by id, for validation, role changes and descriptions.
///
/// Ids are positions in the device's path table and stay stable while the device
/// lives: a path removed at runtime leaves a hole (its id is never given to another
/// path, since requests, fences and events may still name it), and every check here
/// skips holes. So validation counts only live paths: `--weights` must name every
/// live path, a removed path's name or id is unknown.
///
/// Implemented for a plain list of names (no holes; what a config file gives) and for
/// a list with holes (`None` for a removed path).
pub trait PathTable {
    /// The number of ids, live paths and holes: ids are `0..slots()`.
    fn slots(&self) -> usize;
    /// The name of live path `id`; `None` for a removed path or an id out of range.
    fn name(&self, id: PathId) -> Option<&str>;
}

impl PathTable for [String] {
    fn slots(&self) -> usize {
        self.len()
    }

    fn name(&self, id: PathId) -> Option<&str> {
        self.get(id).map(String::as_str)
    }
}

impl PathTable for Vec<String> {
    fn slots(&self) -> usize {
        self.len()
    }

    fn name(&self, id: PathId) -> Option<&str> {
        self.as_slice().name(id)
    }
}

impl<const N: usize> PathTable for [String; N] {
    fn slots(&self) -> usize {
        N
    }

    fn name(&self, id: PathId) -> Option<&str> {
        self.as_slice().name(id)
    }
}

impl PathTable for [Option<String>] {
    fn slots(&self) -> usize {
        self.len()
    }

    fn name(&self, id: PathId) -> Option<&str> {
        self.get(id).and_then(Option::as_deref)
    }
}

impl PathTable for Vec<Option<String>> {
    fn slots(&self) -> usize {
        self.len()
    }

    fn name(&self, id: PathId) -> Option<&str> {
        self.as_slice().name(id)
    }
}

/// The live ids, in table order.
pub(crate) fn live<T: PathTable + ?Sized>(paths: &T) -> impl Iterator<Item = PathId> + '_ {
    (0..paths.slots()).filter(|&id| paths.name(id).is_some())
}

/// Path `id` is live.
pub(crate) fn is_live<T: PathTable + ?Sized>(paths: &T, id: PathId) -> bool {
    paths.name(id).is_some()
}

/// The name of `id` for messages: its name, or `#<id>` when it has none.
pub(crate) fn label<T: PathTable + ?Sized>(paths: &T, id: PathId) -> String {
    paths.name(id).map_or_else(|| format!("#{id}"), str::to_owned)
}

/// The live path names, comma-separated, for error messages.
pub(crate) fn known<T: PathTable + ?Sized>(paths: &T) -> String {
    let names: Vec<&str> = live(paths).filter_map(|id| paths.name(id)).collect();
    if names.is_empty() { "(none)".to_owned() } else { names.join(", ") }
}
