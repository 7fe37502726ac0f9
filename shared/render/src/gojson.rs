//! Field names matched the way Go's `encoding/json` matches them, for every serde type the
//! kustomize side reads (kustomizations, builtin plugin configs, replacement files): kustomize
//! decodes those with `encoding/json`, which takes a key for a struct field in any letter case,
//! an exact match preferred, the last of two keys for one field winning. So `fieldPath` is the
//! `fieldpath` kustomize's docs write, and `Behavior: merge` is `behavior: merge`.
//!
//! One general rule rather than a list per field: [`from_value`] wraps the value in a
//! deserializer that, when serde asks for a struct, renames the map's keys to the struct's own
//! field names (which serde hands it) before the derived code looks at them.

use serde::de::value::StringDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

/// Deserializes `value` into `T`, struct field names matched like Go's `encoding/json`.
pub(crate) fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    T::deserialize(Folding(value))
}

/// Renames the keys of `map` to the field names they match in any letter case; a later key
/// for the same field replaces an earlier one, as in Go. Unknown keys stay as they are (the
/// derived code refuses them where it should).
fn fold(map: Map<String, Value>, fields: &[&str]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::with_capacity(map.len());
    for (key, value) in map {
        let name = if fields.contains(&key.as_str()) {
            key
        } else {
            fields.iter().find(|f| f.eq_ignore_ascii_case(&key)).map_or(key, |f| (*f).to_string())
        };
        out.retain(|(k, _)| *k != name);
        out.push((name, value));
    }
    out
}

/// A JSON value whose nested structs match field names like Go.
struct Folding(Value);

impl<'de> de::Deserializer<'de> for Folding {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            Value::Object(map) => {
                visitor.visit_map(Entries { iter: map.into_iter().collect::<Vec<_>>().into_iter(), value: None })
            }
            other => de::Deserializer::deserialize_any(other, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Folding(other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(Entries { iter: fold(map, fields).into_iter(), value: None }),
            other => de::Deserializer::deserialize_struct(other, name, fields, visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        de::Deserializer::deserialize_enum(self.0, name, variants, visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Self::Error> {
        self.0.next().map(|v| seed.deserialize(Folding(v))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries {
    iter: std::vec::IntoIter<(String, Value)>,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                let key: StringDeserializer<serde_json::Error> = k.into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let v = self.value.take().ok_or_else(|| de::Error::custom("a map value without its key"))?;
        seed.deserialize(Folding(v))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Inner {
        fieldpath: Option<String>,
        name_prefix: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Outer {
        items: Vec<Inner>,
        one: Option<Inner>,
        labels: Option<Map<String, Value>>,
    }

    #[test]
    fn field_names_match_in_any_case_at_any_depth() {
        let v = json!({
            "ITEMS": [{"fieldPath": "a", "NAMEPREFIX": "p-"}],
            "one": {"FieldPath": "b"},
            "labels": {"KeepMyCase": "x"},
        });
        let got: Outer = from_value(v).expect("decodes");
        assert_eq!(got.items, vec![Inner { fieldpath: Some("a".into()), name_prefix: Some("p-".into()) }]);
        assert_eq!(got.one, Some(Inner { fieldpath: Some("b".into()), name_prefix: None }));
        // Map keys are data, not field names: they keep their case.
        assert_eq!(got.labels.expect("labels")["KeepMyCase"], "x");
    }

    #[test]
    fn the_last_key_for_a_field_wins_and_unknown_fields_stay_errors() {
        let got: Inner = from_value(json!({"fieldpath": "a", "FIELDPATH": "b"})).expect("decodes");
        assert_eq!(got.fieldpath.as_deref(), Some("b"));
        let err = from_value::<Inner>(json!({"spec": 1})).expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `spec`"), "{err}");
    }
}
