//! The second pass: each device's table read with its kind already chosen (from the first
//! pass), straight from the TOML deserializer into the kind's raw table, so every value and
//! every key keeps its position for errors. Nothing is buffered on the way: a buffered table
//! (serde's `Content`, as internally tagged and untagged enums and `flatten` use) has lost
//! its positions.

use super::device::{RawKind, COMMON_KEYS};
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
};
use std::collections::BTreeMap;
use std::fmt;

/// Reads the `[devices]` section of `text`, each table as the kind `kinds` gives for it.
pub(crate) fn read_devices(
    text: &str,
    kinds: &BTreeMap<String, &'static str>,
) -> Result<BTreeMap<String, RawKind>, toml::de::Error> {
    Document { kinds }.deserialize(toml::Deserializer::new(text))
}

/// The whole file: everything but `[devices]` was read in the first pass and is skipped.
struct Document<'k> {
    kinds: &'k BTreeMap<String, &'static str>,
}

impl<'de> DeserializeSeed<'de> for Document<'_> {
    type Value = BTreeMap<String, RawKind>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Document<'_> {
    type Value = BTreeMap<String, RawKind>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a configuration file")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut devices = BTreeMap::new();
        while let Some(section) = map.next_key::<String>()? {
            if section == "devices" {
                devices = map.next_value_seed(Devices { kinds: self.kinds })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(devices)
    }
}

/// `[devices]`: name → table.
struct Devices<'k> {
    kinds: &'k BTreeMap<String, &'static str>,
}

impl<'de> DeserializeSeed<'de> for Devices<'_> {
    type Value = BTreeMap<String, RawKind>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Devices<'_> {
    type Value = BTreeMap<String, RawKind>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table of devices")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            // The first pass read the same text, so every device has its kind.
            let Some(kind) = self.kinds.get(&name).copied() else {
                return Err(de::Error::custom(format!(
                    "device `{name}` was not seen when the file was first read; report this as a bug"
                )));
            };
            let table = map.next_value_seed(Kind(kind))?;
            out.insert(name, table);
        }
        Ok(out)
    }
}

/// One device table, read as `kind`.
struct Kind(&'static str);

impl<'de> DeserializeSeed<'de> for Kind {
    type Value = RawKind;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        RawKind::deserialize(self.0, d)
    }
}

/// A device table as a kind's raw table sees it: the keys every kind shares (read in the first
/// pass) are skipped, and a secret written inline is refused with the fix.
pub(crate) struct Filtered<D> {
    inner: D,
    secrets: &'static [&'static str],
}

impl<D> Filtered<D> {
    /// Wraps the deserializer of one device table; `secrets` are the kind's secret settings.
    pub(crate) fn new(inner: D, secrets: &'static [&'static str]) -> Self {
        Filtered { inner, secrets }
    }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Filtered<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(FilteredVisitor {
            inner: visitor,
            secrets: self.secrets,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct FilteredVisitor<V> {
    inner: V,
    secrets: &'static [&'static str],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for FilteredVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(FilteredMap {
            inner: map,
            secrets: self.secrets,
        })
    }
}

struct FilteredMap<A> {
    inner: A,
    secrets: &'static [&'static str],
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for FilteredMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        mut seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let probe = Probe {
                seed,
                secrets: self.secrets,
            };
            match self.inner.next_key_seed(probe)? {
                None => return Ok(None),
                Some(Probed::Own(key)) => return Ok(Some(key)),
                Some(Probed::Common(back)) => {
                    self.inner.next_value::<IgnoredAny>()?;
                    seed = back;
                }
            }
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}

/// A key as the kind's table took it, or a shared key handed back with the table's seed.
enum Probed<V, K> {
    Own(V),
    Common(K),
}

/// Looks at a key before the kind's table does. It runs inside the TOML key deserializer, so
/// an error it returns is reported at the key's line.
struct Probe<K> {
    seed: K,
    secrets: &'static [&'static str],
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for Probe<K> {
    type Value = Probed<K::Value, K>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for Probe<K> {
    type Value = Probed<K::Value, K>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a setting name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if COMMON_KEYS.contains(&key) {
            return Ok(Probed::Common(self.seed));
        }
        if self.secrets.contains(&key) {
            return Err(E::custom(format!(
                "`{key}` is a secret and is never written in the config: give `{key}_file = \"PATH\"` (a file of mode 0600 holding it) or `{key}_env = \"VAR\"` (an environment variable of fenced's)"
            )));
        }
        // With `deny_unknown_fields`, a key the table refuses is an unknown field.
        self.seed
            .deserialize(IntoDeserializer::<E>::into_deserializer(key))
            .map(Probed::Own)
            .map_err(|e| {
                E::custom(format!(
                    "{}; and, on every device: `{}`",
                    e.to_string().trim_end(),
                    COMMON_KEYS.join("`, `")
                ))
            })
    }
}
