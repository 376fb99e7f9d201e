//! `prop(properties, 'key')`: one key of the `properties` JSON column (every
//! property an event carried that was not declared as a typed column), as
//! text. Registered in every session, so breakdowns and `did ... where`
//! conditions on undeclared properties are plain DataFusion expressions, and
//! `tenure sql` can call it too.
//!
//! A string value is returned as is, a number or boolean as its JSON text
//! (`12.5`, `true`), an object or array as its JSON; a missing key, a JSON
//! `null`, a NULL or unparsable `properties` give NULL.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};
use serde_json::value::RawValue;

/// The function's name in SQL and in plans.
pub const NAME: &str = "prop";

/// The UDF (one shared instance).
pub fn prop_udf() -> Arc<ScalarUDF> {
    static UDF: LazyLock<Arc<ScalarUDF>> =
        LazyLock::new(|| Arc::new(ScalarUDF::from(PropFunction::new())));
    UDF.clone()
}

/// `prop(properties, key)` as an expression.
pub fn prop(key: &str) -> Expr {
    prop_udf().call(vec![datafusion::prelude::col("properties"), lit(key)])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PropFunction {
    signature: Signature,
}

impl PropFunction {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for PropFunction {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [json, key] = args.args.as_slice() else {
            return exec_err!("prop(properties, key) takes two arguments");
        };
        let key = match key {
            ColumnarValue::Scalar(s) => match s.try_as_str() {
                Some(Some(k)) => k.to_string(),
                Some(None) => return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
                None => return exec_err!("prop(properties, key): the key must be text"),
            },
            ColumnarValue::Array(_) => {
                return exec_err!("prop(properties, key): the key must be a constant");
            }
        };
        match json {
            ColumnarValue::Scalar(s) => {
                let text = match s.try_as_str() {
                    Some(t) => t.map(str::to_string),
                    None => return exec_err!("prop(properties, key): properties must be text"),
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(
                    text.and_then(|t| value_of(&t, &key)),
                )))
            }
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(values(a, &key)?)),
        }
    }
}

/// The key's value in every row of a text array.
fn values(array: &ArrayRef, key: &str) -> Result<ArrayRef> {
    let text = datafusion::arrow::compute::cast(array, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut out = StringBuilder::with_capacity(text.len(), 8 * text.len());
    // The key as it appears in JSON text: rows without it are skipped
    // without parsing (most rows, for a rare property).
    let quoted = serde_json::to_string(key).unwrap_or_default();
    for row in text.iter() {
        match row.filter(|t| t.contains(&quoted)) {
            Some(t) => out.append_option(value_of(t, key)),
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// One object's value at `key`, as text.
fn value_of(json: &str, key: &str) -> Option<String> {
    let object: HashMap<std::borrow::Cow<'_, str>, &RawValue> = serde_json::from_str(json).ok()?;
    let raw = object.get(key)?.get();
    match raw.as_bytes().first()? {
        b'n' => None,
        b'"' => serde_json::from_str::<String>(raw).ok(),
        _ => Some(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_by_kind() {
        let json = r#"{"country":"JP","n":12.5,"ok":true,"none":null,"o":{"a":1},"q\"k":"x"}"#;
        assert_eq!(value_of(json, "country").as_deref(), Some("JP"));
        assert_eq!(value_of(json, "n").as_deref(), Some("12.5"));
        assert_eq!(value_of(json, "ok").as_deref(), Some("true"));
        assert_eq!(value_of(json, "none"), None);
        assert_eq!(value_of(json, "missing"), None);
        assert_eq!(value_of(json, "o").as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(value_of(json, "q\"k").as_deref(), Some("x"));
        assert_eq!(value_of("not json", "country"), None);
        let array: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec![
            Some(json),
            None,
            Some(r#"{"city":"Osaka"}"#),
        ]));
        let got = values(&array, "country").unwrap();
        let got = got.as_string::<i32>();
        assert_eq!(got.iter().collect::<Vec<_>>(), [Some("JP"), None, None]);
    }
}
