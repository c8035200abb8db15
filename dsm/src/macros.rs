//! `wire_enum!`: a newtype over a wire integer with named constants.
//!
//! SCSI code points are open sets: targets return values newer than any
//! table we ship (new status codes, sense keys, designator types). A Rust
//! `enum` would have to reject or collapse those; a newtype keeps the exact
//! value, while the constants give the known ones names (the same idea as
//! rustls' `enum_builder!`, see STYLE.md section 2).
//!
//! Each generated type has:
//! - `pub const NAME: Self` per known value,
//! - `name()` with the standard's human spelling ("CHECK CONDITION"),
//! - `Debug` printing the constant's identifier, or `Type(0x..)` if unknown,
//! - `Display` printing the human spelling, or `0x..` if unknown,
//! - `From` conversions to and from the raw integer.

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub struct $name:ident(u8);
        $(
            $(#[$cmeta:meta])*
            $konst:ident = $val:literal => $text:literal;
        )*
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u8);

        impl $name {
            $(
                $(#[$cmeta])*
                pub const $konst: Self = Self($val);
            )*

            /// The standard's spelling of this value, or `None` if unknown here.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some($text), )*
                    _ => None,
                }
            }

            /// The identifier of the matching constant, for `Debug`.
            const fn ident(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some(stringify!($konst)), )*
                    _ => None,
                }
            }
        }

        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                Self(v)
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v.0
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.ident() {
                    Some(id) => f.write_str(id),
                    None => write!(f, concat!(stringify!($name), "({:#04x})"), self.0),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{:#04x}", self.0),
                }
            }
        }
    };
}

pub(crate) use wire_enum;
