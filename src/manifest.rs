//! Reading Kubernetes manifests from files, and checking an object against
//! the CRD's structural schema and CEL rules as the apiserver would.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use base64::Engine;
use kube::CustomResourceExt;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    Error,
    api::{IdentityProvider, policy::AccessPolicy},
    controller::validate::{SecretContent, SecretData},
};

/// One YAML document and where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    /// `path` or `path#N` for the N-th document (1-based) of a multi-document file.
    pub source: String,
    pub value: Value,
}

impl Document {
    pub fn kind(&self) -> &str {
        self.value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
    pub fn api_version(&self) -> &str {
        self.value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
    pub fn namespace<'a>(&'a self, default: &'a str) -> &'a str {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(default)
    }
}

/// Files under `path` (itself, or every `.yaml`, `.yml` and `.json` below
/// it, sorted).
pub fn files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::Manifest(format!("{}: {e}", path.display())))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| Error::Manifest(format!("{}: {e}", dir.display())))?
        {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Parses every document of a YAML (or JSON) text. Empty documents are
/// skipped. Stops at the first malformed document: serde_yaml's document
/// iterator repeats the error forever rather than ending.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Document>, Error> {
    let mut out = Vec::new();
    let many = text.starts_with("---") || text.contains("\n---");
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let name = if many {
            format!("{source}#{}", i + 1)
        } else {
            source.to_string()
        };
        let yaml = serde_yaml::Value::deserialize(de)
            .map_err(|e| Error::Manifest(format!("{name}: invalid YAML: {e}")))?;
        if yaml.is_null() {
            continue;
        }
        let value =
            serde_json::to_value(&yaml).map_err(|e| Error::Manifest(format!("{name}: {e}")))?;
        out.push(Document {
            source: name,
            value,
        });
    }
    Ok(out)
}

/// Loads every document from the given files or folders.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Document>, Error> {
    let mut out = Vec::new();
    for path in paths {
        for file in files(path)? {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::Manifest(format!("{}: {e}", file.display())))?;
            out.extend(parse_documents(&file.display().to_string(), &text)?);
        }
    }
    Ok(out)
}

/// Secret data by namespace, then name, from Secret manifests (`data` is
/// base64, `stringData` wins over `data` as in the API).
pub fn secrets(docs: &[Document], default_ns: &str) -> Result<BTreeMap<String, SecretData>, Error> {
    let mut out: BTreeMap<String, SecretData> = BTreeMap::new();
    for d in docs
        .iter()
        .filter(|d| d.kind() == "Secret" && d.api_version() == "v1")
    {
        let mut data = BTreeMap::new();
        if let Some(map) = d.value.get("data").and_then(Value::as_object) {
            for (k, v) in map {
                let s = v.as_str().ok_or_else(|| {
                    Error::Manifest(format!("{}: data.{k} is not a string", d.source))
                })?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .map_err(|e| {
                        Error::Manifest(format!("{}: data.{k} is not base64: {e}", d.source))
                    })?;
                data.insert(k.clone(), bytes);
            }
        }
        if let Some(map) = d.value.get("stringData").and_then(Value::as_object) {
            for (k, v) in map {
                let s = v.as_str().ok_or_else(|| {
                    Error::Manifest(format!("{}: stringData.{k} is not a string", d.source))
                })?;
                data.insert(k.clone(), s.as_bytes().to_vec());
            }
        }
        out.entry(d.namespace(default_ns).to_string())
            .or_default()
            .insert(
                d.name().to_string(),
                SecretContent {
                    type_: d
                        .value
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("Opaque")
                        .to_string(),
                    data,
                },
            );
    }
    Ok(out)
}

/// The CRD's openAPIV3Schema as JSON.
pub fn crd_schema() -> Value {
    schema_of(IdentityProvider::crd())
}

/// The openAPIV3Schema of the CRD for `kind` (IdentityProvider or
/// AccessPolicy), as JSON.
pub fn crd_schema_for(kind: &str) -> Option<Value> {
    match kind {
        "IdentityProvider" => Some(crd_schema()),
        "AccessPolicy" => Some(schema_of(AccessPolicy::crd())),
        _ => None,
    }
}

fn schema_of(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("derived CRD has a schema");
    serde_json::to_value(schema).expect("schema serializes")
}

/// Checks an object (IdentityProvider or AccessPolicy) as admission would: structural schema
/// (types, enums, required fields, unknown fields, sizes), then the CEL
/// rules, evaluated by kube's own CEL interpreter. Returns every problem.
pub fn admission_errors(schema: &Value, object: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    // metadata is validated by the apiserver itself; check the rest.
    let mut rest = object.clone();
    if let Some(o) = rest.as_object_mut() {
        // Validated by the apiserver itself, not by the CRD schema.
        for k in ["apiVersion", "kind", "metadata", "status"] {
            o.remove(k);
        }
    }
    let mut schema_rest = schema.clone();
    if let Some(p) = schema_rest
        .get_mut("properties")
        .and_then(Value::as_object_mut)
    {
        p.remove("metadata");
        p.remove("status");
    }
    structural_errors(&schema_rest, &rest, "", &mut errors);
    if object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errors.push("metadata.name: Required value".into());
    }
    if errors.is_empty()
        && let Err(errs) = kube::core::cel::Validator::new().validate(schema, object, None)
    {
        errors.extend(errs.iter().map(|e| e.to_string()));
    }
    errors
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// The subset of OpenAPI v3 structural validation our schema uses.
fn structural_errors(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let at = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) {
            errors.push(format!("{at}: Invalid value: null"));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        _ => true,
    };
    if !type_ok {
        errors.push(format!(
            "{at}: Invalid value: {value}: must be of type {}",
            ty.unwrap_or("?")
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        errors.push(format!(
            "{at}: Unsupported value: {value}: supported values: {}",
            list.join(", ")
        ));
    }
    match value {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(format!(
                    "{at}: Too long: may not be more than {max} characters"
                ));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(format!(
                    "{at}: Invalid value: must be at least {min} characters"
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errors.push(format!(
                    "{at}: Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(format!(
                    "{at}: Invalid value: {}: must have at least {min} items",
                    items.len()
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    structural_errors(item_schema, v, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => {
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                errors.push(format!(
                    "{at}: Too many: {}: must have at most {max} properties",
                    map.len()
                ));
            }
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(req) {
                    errors.push(format!("{}: Required value", join(path, req)));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            for (k, v) in map {
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) => structural_errors(s, v, &join(path, k), errors),
                    (None, Some(s)) => structural_errors(s, v, &join(path, k), errors),
                    (None, None) if preserve => {}
                    (None, None) => errors.push(format!("{}: unknown field {k:?}", join(path, k))),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_yaml_ends_with_an_error() {
        // Run with a deadline: the bug this guards against was an endless loop.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tx.send(parse_documents("f.yaml", "a: 1\n---\nspec: [unclosed").map(|d| d.len()))
        });
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("parsing malformed YAML must end");
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("f.yaml#2: invalid YAML"), "{err}");
    }

    #[test]
    fn documents_are_named_by_position() {
        let docs = parse_documents("f.yaml", "---\nkind: A\n---\n---\nkind: B\n").unwrap();
        let names: Vec<&str> = docs.iter().map(|d| d.source.as_str()).collect();
        assert_eq!(names, ["f.yaml#1", "f.yaml#3"]);
        assert_eq!(
            parse_documents("g.yaml", "kind: A\n").unwrap()[0].source,
            "g.yaml"
        );
    }
}
