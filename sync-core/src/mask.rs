use std::fmt;

use sync_schema::ModelSchema;

use crate::error::{Error, Result};

/// A set of a model's fields, as bits by [`FieldSpec::position`](crate::FieldSpec::position).
///
/// Holds up to [`FieldMask::CAPACITY`] fields; the derive refuses models with more.
///
/// ```
/// use sync_core::FieldMask;
/// let a = FieldMask::single(0).union(FieldMask::single(3));
/// assert!(a.contains(3));
/// assert_eq!(a.iter().collect::<Vec<_>>(), [0, 3]);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FieldMask(u64);

impl FieldMask {
    /// How many fields a mask (and so a model) can hold.
    pub const CAPACITY: usize = 64;

    /// The empty set.
    pub const EMPTY: FieldMask = FieldMask(0);

    /// The set of the first `count` fields (all fields of a model with `count` fields).
    pub const fn all(count: usize) -> FieldMask {
        if count >= Self::CAPACITY {
            FieldMask(u64::MAX)
        } else {
            FieldMask((1u64 << count) - 1)
        }
    }

    /// The set holding only `position`.
    ///
    /// # Panics
    /// If `position >= CAPACITY`; positions come from a model's schema, which never has that many.
    pub const fn single(position: usize) -> FieldMask {
        assert!(
            position < Self::CAPACITY,
            "field position out of FieldMask range"
        );
        FieldMask(1u64 << position)
    }

    /// Builds a mask from raw bits.
    pub const fn from_bits(bits: u64) -> FieldMask {
        FieldMask(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// True if `position` is in the set.
    pub const fn contains(self, position: usize) -> bool {
        position < Self::CAPACITY && self.0 & (1u64 << position) != 0
    }

    /// Adds `position`.
    pub fn insert(&mut self, position: usize) {
        *self = self.union(FieldMask::single(position));
    }

    /// Removes `position`.
    pub fn remove(&mut self, position: usize) {
        if position < Self::CAPACITY {
            self.0 &= !(1u64 << position);
        }
    }

    /// Fields in either set.
    #[must_use]
    pub const fn union(self, other: FieldMask) -> FieldMask {
        FieldMask(self.0 | other.0)
    }

    /// Fields in both sets.
    #[must_use]
    pub const fn intersection(self, other: FieldMask) -> FieldMask {
        FieldMask(self.0 & other.0)
    }

    /// Fields in `self` but not in `other`.
    #[must_use]
    pub const fn difference(self, other: FieldMask) -> FieldMask {
        FieldMask(self.0 & !other.0)
    }

    /// True if no field is in the set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of fields in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Positions in ascending order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let position = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(position)
        })
    }

    /// Wire names of the fields in the set, in schema order.
    pub fn wire_names(self, schema: &ModelSchema) -> Vec<&'static str> {
        self.iter()
            .filter_map(|p| schema.fields.get(p))
            .map(|f| f.wire_name)
            .collect()
    }

    /// Builds a mask from wire names (or Rust names) of `schema`'s fields.
    ///
    /// An unknown name is an error, so a stored or received list of changed
    /// fields never loses an entry silently.
    pub fn from_names<S: AsRef<str>>(
        schema: &ModelSchema,
        names: impl IntoIterator<Item = S>,
    ) -> Result<FieldMask> {
        let mut mask = FieldMask::EMPTY;
        for name in names {
            let name = name.as_ref();
            let field = schema
                .field_by_wire_name(name)
                .or_else(|| schema.field_by_name(name))
                .ok_or_else(|| Error::UnknownField {
                    model: schema.model_type,
                    name: name.to_owned(),
                })?;
            mask.insert(field.position);
        }
        Ok(mask)
    }
}

impl fmt::Debug for FieldMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<usize> for FieldMask {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut mask = FieldMask::EMPTY;
        for position in iter {
            mask.insert(position);
        }
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_covers_exactly_count_fields() {
        assert_eq!(FieldMask::all(0), FieldMask::EMPTY);
        assert_eq!(FieldMask::all(3).iter().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(FieldMask::all(64).len(), 64);
    }

    #[test]
    fn set_operations() {
        let a: FieldMask = [0, 2, 5].into_iter().collect();
        let b: FieldMask = [2, 7].into_iter().collect();
        assert_eq!(a.union(b).iter().collect::<Vec<_>>(), [0, 2, 5, 7]);
        assert_eq!(a.intersection(b).iter().collect::<Vec<_>>(), [2]);
        assert_eq!(a.difference(b).iter().collect::<Vec<_>>(), [0, 5]);
        assert!(!a.contains(64));
        let mut c = a;
        c.remove(2);
        c.remove(99);
        assert_eq!(c.len(), 2);
        assert!(!c.is_empty());
        assert_eq!(format!("{c:?}"), "{0, 5}");
    }

    #[test]
    fn highest_bit_iterates() {
        let m = FieldMask::single(63);
        assert_eq!(m.iter().collect::<Vec<_>>(), [63]);
    }
}
