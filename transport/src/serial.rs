//! Serial number arithmetic for CmdSN, StatSN, DataSN and R2TSN.
//!
//! RFC 7143 section 4.2.2.1: "The iSCSI protocol uses serial number arithmetic
//! as defined in \[RFC1982\] ... SERIAL_BITS = 32". Sequence numbers wrap, so
//! they are compared with these helpers, never with `<` on the raw `u32`.

/// A 32-bit sequence number compared with RFC 1982 serial number arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sn(pub u32);

impl Sn {
    /// The number that follows this one, wrapping at 2^32.
    pub fn next(self) -> Sn {
        Sn(self.0.wrapping_add(1))
    }

    /// This number advanced by `n`, wrapping.
    pub fn plus(self, n: u32) -> Sn {
        Sn(self.0.wrapping_add(n))
    }

    /// `self < other` in serial arithmetic.
    ///
    /// RFC 1982 leaves the comparison of two numbers exactly 2^31 apart
    /// undefined; we answer `false` both ways for them, which makes the
    /// callers treat such a pair as "not in order" and stay safe.
    pub fn lt(self, other: Sn) -> bool {
        let d = other.0.wrapping_sub(self.0);
        d != 0 && d < 0x8000_0000
    }

    /// `self <= other` in serial arithmetic.
    pub fn le(self, other: Sn) -> bool {
        self == other || self.lt(other)
    }

    /// `self > other` in serial arithmetic.
    pub fn gt(self, other: Sn) -> bool {
        other.lt(self)
    }

    /// Distance from `self` forward to `other` (`other - self`), when `other`
    /// is not behind `self`.
    pub fn distance_to(self, other: Sn) -> Option<u32> {
        self.le(other).then(|| other.0.wrapping_sub(self.0))
    }
}

impl std::fmt::Display for Sn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Sn;
    use proptest::prelude::*;

    #[test]
    fn ordering_across_the_wrap() {
        assert!(Sn(u32::MAX).lt(Sn(0)));
        assert!(Sn(0).gt(Sn(u32::MAX)));
        assert!(Sn(5).lt(Sn(6)));
        assert!(!Sn(6).lt(Sn(6)));
        assert!(Sn(6).le(Sn(6)));
        assert_eq!(Sn(u32::MAX).next(), Sn(0));
        assert_eq!(Sn(u32::MAX - 1).distance_to(Sn(1)), Some(3));
        assert_eq!(Sn(1).distance_to(Sn(0)), None);
    }

    #[test]
    fn half_way_is_unordered() {
        assert!(!Sn(0).lt(Sn(0x8000_0000)));
        assert!(!Sn(0x8000_0000).lt(Sn(0)));
    }

    proptest! {
        #[test]
        fn step_forward_is_greater(a: u32, n in 1u32..0x7fff_ffff) {
            let a = Sn(a);
            prop_assert!(a.lt(a.plus(n)));
            prop_assert!(a.plus(n).gt(a));
            prop_assert_eq!(a.distance_to(a.plus(n)), Some(n));
        }
    }
}
