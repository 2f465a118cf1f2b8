//! A whole number in a request body, however JSON spells it: `1800`, or `1800.0`, which JSON
//! (and JSON Schema's `integer`) take for the same number, while serde's integers refuse the
//! second. Out of range or with a fraction, it is refused with the reason. (CSV cells reach
//! it as numbers too: the csv crate infers a cell's type for `deserialize_any`.)

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Visitor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole<T>(pub T);

struct WholeVisitor<T>(PhantomData<T>);

impl<T: TryFrom<i128>> WholeVisitor<T> {
    fn fit<E: de::Error>(n: i128) -> Result<Whole<T>, E> {
        T::try_from(n)
            .map(Whole)
            .map_err(|_| E::custom(format!("{n} is out of range")))
    }
}

impl<T: TryFrom<i128>> Visitor<'_> for WholeVisitor<T> {
    type Value = Whole<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Self::fit(i128::from(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Self::fit(i128::from(n))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        // Exactly representable whole numbers only (|n| < 2^53 covers every range we take).
        if n.fract() != 0.0 || !n.is_finite() || n.abs() >= 9_007_199_254_740_992.0 {
            return Err(E::custom(format!("{n} is not a whole number")));
        }
        #[allow(clippy::cast_possible_truncation)]
        Self::fit(n as i128)
    }
}

impl<'de, T: TryFrom<i128>> Deserialize<'de> for Whole<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WholeVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::Whole;

    #[test]
    fn a_whole_number_however_spelled_and_nothing_else() {
        let parse = |s: &str| serde_json::from_str::<Whole<u32>>(s).map(|w| w.0);
        assert_eq!(parse("1800").unwrap(), 1800);
        assert_eq!(parse("1800.0").unwrap(), 1800);
        assert_eq!(parse("1.8e3").unwrap(), 1800);
        assert!(parse("1800.5").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("4294967296").is_err());
        assert!(parse("\"12\"").is_err(), "a JSON string is no number");
        assert!(parse("1e300").is_err());
        assert_eq!(serde_json::from_str::<Whole<i64>>("-5.0").unwrap().0, -5);
    }
}
