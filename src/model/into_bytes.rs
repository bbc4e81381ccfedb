//! What a key or a value can be given as: owned buffers move, borrowed ones are copied, so
//! `get(&name)` with a `String` and `get(name.as_str())` both work.

use bytes::Bytes;

/// A key or value, turned into the `Bytes` the store keeps.
pub trait IntoBytes {
    /// The bytes, moved when owned, copied when borrowed.
    fn into_bytes(self) -> Bytes;
}

impl IntoBytes for Bytes {
    fn into_bytes(self) -> Bytes {
        self
    }
}

impl IntoBytes for &Bytes {
    fn into_bytes(self) -> Bytes {
        self.clone()
    }
}

impl IntoBytes for Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBytes for String {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBytes for &str {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl IntoBytes for &String {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl IntoBytes for &[u8] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl IntoBytes for &Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl<const N: usize> IntoBytes for &[u8; N] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(key: impl IntoBytes) -> Bytes {
        key.into_bytes()
    }

    #[test]
    fn every_usual_key_type_gives_the_same_bytes() {
        let name = String::from("cart");
        let raw = name.clone().into_bytes();
        let expected = Bytes::from_static(b"cart");
        for got in [
            take("cart"),
            take(&name),
            take(name.as_str()),
            take(name.clone()),
            take(raw.clone()),
            take(&raw),
            take(raw.as_slice()),
            take(b"cart"),
            take(expected.clone()),
            take(&expected),
        ] {
            assert_eq!(got, expected);
        }
    }
}
