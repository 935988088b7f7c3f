//! Kubernetes strategic merge patch, as the apiserver applies it
//! (`k8s.io/apimachinery/pkg/util/strategicpatch`, server-side options:
//! parallel lists are merged and unmatched `null`s are dropped).
//!
//! Behaviour that is easy to get wrong and is kept on purpose:
//! * without `$setElementOrder`, merged list items named by the patch are
//!   placed by apimachinery's best-effort interleaving, which puts items that
//!   are new to the list *before* the existing ones (`[a, b]` patched with
//!   `[c]` becomes `[c, a, b]`);
//! * `$retainKeys` is honoured wherever it appears, not only on fields tagged
//!   `retainKeys`;
//! * merge keys and primitive list items compare as JSON values, with whole
//!   floats equal to integers (`80.0` matches `80`), as after apimachinery's
//!   number decoding.
//!
//! Deliberate differences, all where apimachinery leaves directives or `null`s
//! in the stored object (its typed decoding later drops them, untyped storage
//! would keep them): values the patch introduces are cleaned of directives and
//! `null` members, `$patch: delete` on a map removes the field instead of
//! leaving `{}`, `$patch: merge` on a map is accepted as the no-op the
//! documentation describes, unknown `$` keys are rejected, and a
//! `$deleteFromPrimitiveList` that targets a list of maps is an error.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::schema::{self, ListStrategy};
use super::{check_depth, remove_key, type_name, PatchError, MAX_DEPTH};

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";

/// Applies a strategic merge patch to an object of the given `kind` and
/// returns the patched copy. Kinds without known list metadata (custom
/// resources among them) still get the `metadata` rules shared by all kinds.
pub fn strategic_merge(kind: &str, target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Object(patch_map) = patch else {
        return Err(PatchError::NotAnObject {
            what: "strategic merge patch",
            found: type_name(patch),
        });
    };
    let Value::Object(target_map) = target else {
        return Err(PatchError::NotAnObject {
            what: "the object to patch",
            found: type_name(target),
        });
    };
    check_depth(target, "target object")?;
    check_depth(patch, "strategic merge patch")?;
    let merger = Merger { kind };
    let merged = merger.merge_map(Some(target_map), patch_map, &Path::root())?;
    // `$patch: delete` at the top level leaves an empty object, as in
    // apimachinery; the caller's validation then rejects it.
    Ok(Value::Object(merged.unwrap_or_default()))
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Field(&'a str),
    Index(usize),
}

/// Location in the object being merged: drives the merge-key lookup (field
/// names only) and error messages (with list positions).
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Option<Segment<'a>>,
    depth: usize,
}

impl<'a> Path<'a> {
    fn root() -> Path<'static> {
        Path {
            parent: None,
            segment: None,
            depth: 0,
        }
    }

    fn field(&'a self, name: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Some(Segment::Field(name)),
            depth: self.depth + 1,
        }
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Some(Segment::Index(index)),
            depth: self.depth + 1,
        }
    }

    fn segments(&self) -> Vec<Segment<'a>> {
        let mut out = Vec::with_capacity(self.depth);
        let mut node = Some(self);
        while let Some(current) = node {
            if let Some(segment) = current.segment {
                out.push(segment);
            }
            node = current.parent;
        }
        out.reverse();
        out
    }

    fn fields(&self) -> Vec<&'a str> {
        self.segments()
            .into_iter()
            .filter_map(|s| match s {
                Segment::Field(name) => Some(name),
                Segment::Index(_) => None,
            })
            .collect()
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for segment in self.segments() {
            match segment {
                Segment::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        if out.is_empty() {
            out.push_str("<root>");
        }
        out
    }
}

fn fail(path: &Path<'_>, reason: impl Into<String>) -> PatchError {
    PatchError::Strategic {
        path: path.render(),
        reason: reason.into(),
    }
}

/// Short rendering of a value for error messages; long values are cut so that
/// a hostile patch cannot make the error response large.
fn show(v: &Value) -> String {
    const LIMIT: usize = 120;
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() <= LIMIT {
        return s;
    }
    let mut cut: String = s.chars().take(LIMIT).collect();
    cut.push_str("...");
    cut
}

// Error constructors live outside the recursive functions so that their
// formatting temporaries do not enlarge every recursion frame.

#[cold]
fn unknown_patch_type(path: &Path<'_>, directive: &Value) -> PatchError {
    fail(
        path,
        format!("unknown patch type: {} in map", show(directive)),
    )
}

#[cold]
fn expected_map(path: &Path<'_>, item: &Value) -> PatchError {
    fail(
        path,
        format!("expected a map, but received {}", type_name(item)),
    )
}

fn a_or_an(v: &Value) -> &'static str {
    match v {
        Value::Array(_) | Value::Object(_) => "an",
        _ => "a",
    }
}

#[cold]
fn no_merge_key(path: &Path<'_>, item: &Value, key: &str) -> PatchError {
    fail(
        path,
        format!(
            "map: {} does not contain declared merge key: {key}",
            show(item)
        ),
    )
}

/// Identity of a merge-key value or primitive list item. Whole floats are
/// written as integers because apimachinery decodes them to the same int64.
fn identity(v: &Value) -> String {
    if let Value::Number(n) = v {
        if n.is_f64() {
            if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    return format!("{}", f as i64);
                }
            }
        }
    }
    v.to_string()
}

/// What a patch map key means.
#[derive(Clone, Copy)]
enum Key<'k> {
    Field,
    Patch,
    RetainKeys,
    SetElementOrder(&'k str),
    DeleteFromPrimitiveList(&'k str),
}

fn classify<'k>(key: &'k str, path: &Path<'_>) -> Result<Key<'k>, PatchError> {
    if !key.starts_with('$') {
        return Ok(Key::Field);
    }
    match key {
        PATCH_DIRECTIVE => return Ok(Key::Patch),
        RETAIN_KEYS_DIRECTIVE => return Ok(Key::RetainKeys),
        // Real field names in CustomResourceDefinition schemas.
        "$ref" | "$schema" => return Ok(Key::Field),
        _ => {}
    }
    if let Some(rest) = key.strip_prefix(SET_ELEMENT_ORDER_PREFIX) {
        return match rest.strip_prefix('/') {
            Some(field) if !field.is_empty() => Ok(Key::SetElementOrder(field)),
            _ => Err(fail(
                path,
                format!(
                    "invalid patch format of setElementOrder list: directive \"{key}\" must name a list field, as in \"$setElementOrder/containers\""
                ),
            )),
        };
    }
    if let Some(rest) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
        return match rest.strip_prefix('/') {
            Some(field) if !field.is_empty() => Ok(Key::DeleteFromPrimitiveList(field)),
            _ => Err(fail(
                path,
                format!(
                    "invalid patch format of primitive list: directive \"{key}\" must name a list field, as in \"$deleteFromPrimitiveList/finalizers\""
                ),
            )),
        };
    }
    Err(fail(
        path,
        format!("unknown strategic merge patch directive \"{key}\""),
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Element {
    Primitive,
    Map,
}

/// The common element type of the given lists (`None` when all are empty).
/// Merging needs one: maps merge by key, primitives as a set.
fn element_kind(lists: &[&[Value]], path: &Path<'_>) -> Result<Option<Element>, PatchError> {
    let mut seen: Option<&'static str> = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        if item.is_array() {
            return Err(fail(path, "lists of lists are not supported"));
        }
        let t = type_name(item);
        match seen {
            None => seen = Some(t),
            Some(first) if first != t => {
                return Err(fail(
                    path,
                    format!("list element types are not identical: found {first} and {t}"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(seen.map(|t| {
        if t == "object" {
            Element::Map
        } else {
            Element::Primitive
        }
    }))
}

/// apimachinery's `normalizeElementOrder`: the items the patch names, in the
/// patch's order, interleaved with the server-only items, which keep their
/// original order. A server-only item goes before a patch item only when both
/// appear in the original list and it came first there, so items new to the
/// list end up in front of the existing ones.
fn order_items(
    items: Vec<Value>,
    patch_order: &[String],
    server_order: &[String],
    id: &dyn Fn(&Value) -> String,
) -> Vec<Value> {
    fn first_positions(ids: &[String]) -> HashMap<&str, usize> {
        let mut positions = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            positions.entry(id.as_str()).or_insert(i);
        }
        positions
    }
    let patch_pos = first_positions(patch_order);
    let server_pos = first_positions(server_order);

    let mut from_patch: Vec<(usize, Option<usize>, Value)> = Vec::new();
    let mut server_only: Vec<(usize, Option<usize>, Value)> = Vec::new();
    for item in items {
        let key = id(&item);
        let in_server = server_pos.get(key.as_str()).copied();
        match patch_pos.get(key.as_str()) {
            Some(&p) => from_patch.push((p, in_server, item)),
            None => server_only.push((in_server.unwrap_or(usize::MAX), in_server, item)),
        }
    }
    from_patch.sort_by_key(|(p, _, _)| *p);
    server_only.sort_by_key(|(s, _, _)| *s);

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((_, l, _)), Some((_, r, _))) => matches!((l, r), (Some(l), Some(r)) if l < r),
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some((_, _, item)) = next {
            out.push(item);
        }
    }
    out
}

struct Merger<'k> {
    kind: &'k str,
}

impl Merger<'_> {
    fn guard(&self, path: &Path<'_>) -> Result<(), PatchError> {
        if path.depth > MAX_DEPTH {
            return Err(PatchError::TooDeep {
                what: "strategic merge patch",
                limit: MAX_DEPTH,
            });
        }
        Ok(())
    }

    fn list_strategy(&self, path: &Path<'_>) -> ListStrategy {
        schema::list_strategy(self.kind, &path.fields())
    }

    /// Merges `patch` into `original` (absent when the field is new or is
    /// being replaced). `None` means the map is deleted.
    fn merge_map(
        &self,
        original: Option<&Map<String, Value>>,
        patch: &Map<String, Value>,
        path: &Path<'_>,
    ) -> Result<Option<Map<String, Value>>, PatchError> {
        self.guard(path)?;
        let mut keys = Vec::with_capacity(patch.len());
        for (name, value) in patch {
            keys.push((name.as_str(), classify(name, path)?, value));
        }
        let mut original = original;
        if let Some(directive) = patch.get(PATCH_DIRECTIVE) {
            match directive.as_str() {
                Some("replace") => original = None,
                Some("delete") => return Ok(None),
                Some("merge") => {}
                _ => return Err(unknown_patch_type(path, directive)),
            }
        }
        self.merge_fields(original, patch, &keys, path).map(Some)
    }

    fn merge_fields(
        &self,
        original: Option<&Map<String, Value>>,
        patch: &Map<String, Value>,
        keys: &[(&str, Key<'_>, &Value)],
        path: &Path<'_>,
    ) -> Result<Map<String, Value>, PatchError> {
        let mut result = original.cloned().unwrap_or_default();
        let ordered = self.leading_directives(&mut result, patch, keys, path)?;
        for (name, key, value) in keys {
            if !matches!(key, Key::Field) || ordered.contains(name) {
                continue;
            }
            if value.is_null() {
                remove_key(&mut result, name);
                continue;
            }
            let child = path.field(name);
            match self.merge_value(result.get(*name), value, &child)? {
                Some(merged) => {
                    result.insert((*name).to_string(), merged);
                }
                None => remove_key(&mut result, name),
            }
        }

        for (_, key, value) in keys {
            if let Key::DeleteFromPrimitiveList(field) = *key {
                self.delete_from_primitive_list(&mut result, field, value, path)?;
            }
        }
        Ok(result)
    }

    /// `$retainKeys`, then every `$setElementOrder/<field>` together with the
    /// patch's value for that field. Returns the fields already handled.
    fn leading_directives<'p>(
        &self,
        result: &mut Map<String, Value>,
        patch: &Map<String, Value>,
        keys: &[(&'p str, Key<'p>, &Value)],
        path: &Path<'_>,
    ) -> Result<Vec<&'p str>, PatchError> {
        if let Some((_, _, retain)) = keys.iter().find(|(_, k, _)| matches!(k, Key::RetainKeys)) {
            apply_retain_keys(result, retain, keys, path)?;
        }
        let mut ordered = Vec::new();
        for (_, key, order) in keys {
            if let Key::SetElementOrder(field) = *key {
                self.set_element_order(result, field, order, patch.get(field), path)?;
                ordered.push(field);
            }
        }
        Ok(ordered)
    }

    /// Merges one patch value into the original value of the same field.
    fn merge_value(
        &self,
        original: Option<&Value>,
        patch: &Value,
        path: &Path<'_>,
    ) -> Result<Option<Value>, PatchError> {
        match patch {
            Value::Object(patch_map) => {
                let original = if schema::map_is_replaced(self.kind, &path.fields()) {
                    None
                } else {
                    original.and_then(Value::as_object)
                };
                Ok(self
                    .merge_map(original, patch_map, path)?
                    .map(Value::Object))
            }
            Value::Array(patch_list) => {
                let original = original
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let strategy = self.list_strategy(path);
                Ok(Some(Value::Array(
                    self.merge_list(original, patch_list, strategy, path)?,
                )))
            }
            Value::Null => Ok(None),
            scalar => Ok(Some(scalar.clone())),
        }
    }

    fn merge_list(
        &self,
        original: &[Value],
        patch: &[Value],
        strategy: ListStrategy,
        path: &Path<'_>,
    ) -> Result<Vec<Value>, PatchError> {
        self.guard(path)?;
        match strategy {
            ListStrategy::Replace => self.fresh_list(patch, path),
            ListStrategy::Merge(key) => self.merge_set(original, patch, key, path),
        }
    }

    /// A list that replaces the original: its items are taken as new values,
    /// which drops directive-only items and `null` map members.
    fn fresh_list(&self, patch: &[Value], path: &Path<'_>) -> Result<Vec<Value>, PatchError> {
        let mut out = Vec::with_capacity(patch.len());
        for (i, item) in patch.iter().enumerate() {
            if item.is_null() {
                out.push(Value::Null);
                continue;
            }
            if let Some(value) = self.merge_value(None, item, &path.index(i))? {
                out.push(value);
            }
        }
        Ok(out)
    }

    /// apimachinery's `mergeSlice` for lists tagged `patchStrategy: merge`.
    fn merge_set(
        &self,
        original: &[Value],
        patch: &[Value],
        key: Option<&'static str>,
        path: &Path<'_>,
    ) -> Result<Vec<Value>, PatchError> {
        let Some(element) = element_kind(&[original, patch], path)? else {
            return Ok(Vec::new());
        };
        match element {
            Element::Primitive => Ok(merge_primitives(original, patch)),
            Element::Map => {
                let Some(key) = key else {
                    return Err(fail(path, "cannot merge lists without merge key"));
                };
                self.merge_maps_by_key(original, patch, key, path)
            }
        }
    }

    fn merge_maps_by_key(
        &self,
        original: &[Value],
        patch: &[Value],
        key: &str,
        path: &Path<'_>,
    ) -> Result<Vec<Value>, PatchError> {
        let split = split_list_patch(original, patch, key, path)?;
        if split.replace {
            return self.fresh_maps(&split.plain, path);
        }
        let mut working = split.working;
        let mut positions = split.positions;
        let mut patch_order = Vec::with_capacity(split.plain.len());
        for (i, map, id) in split.plain {
            let item_path = path.index(i);
            match positions.get(&id).copied() {
                Some(at) => {
                    let original = working.get(at).and_then(Value::as_object);
                    let merged = self.merge_map(original, map, &item_path)?;
                    if let Some(slot) = working.get_mut(at) {
                        *slot = Value::Object(merged.unwrap_or_default());
                    }
                }
                None => {
                    if let Some(fresh) = self.merge_map(None, map, &item_path)? {
                        positions.insert(id.clone(), working.len());
                        working.push(Value::Object(fresh));
                    }
                }
            }
            patch_order.push(id);
        }
        let by_key = |item: &Value| item.get(key).map(identity).unwrap_or_default();
        Ok(order_items(
            working,
            &patch_order,
            &split.server_order,
            &by_key,
        ))
    }

    /// The items of a list patch that carried `$patch: replace`.
    fn fresh_maps(
        &self,
        items: &[(usize, &Map<String, Value>, String)],
        path: &Path<'_>,
    ) -> Result<Vec<Value>, PatchError> {
        let mut out = Vec::with_capacity(items.len());
        for (i, map, _) in items {
            if let Some(fresh) = self.merge_map(None, map, &path.index(*i))? {
                out.push(Value::Object(fresh));
            }
        }
        Ok(out)
    }

    /// apimachinery's `mergePatchIntoOriginal` for one `$setElementOrder/<field>`.
    fn set_element_order(
        &self,
        result: &mut Map<String, Value>,
        field: &str,
        order: &Value,
        patch_field: Option<&Value>,
        path: &Path<'_>,
    ) -> Result<(), PatchError> {
        let directive = format!("{SET_ELEMENT_ORDER_PREFIX}/{field}");
        let Value::Array(order) = order else {
            return Err(fail(
                path,
                format!(
                    "invalid patch format of setElementOrder list: {directive} must be a list, but received {}",
                    type_name(order)
                ),
            ));
        };
        let original: Option<&[Value]> = match result.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items),
            Some(other) => {
                return Err(fail(
                    path,
                    format!(
                        "{directive} applies to a list, but {field} is {} {}",
                        a_or_an(other),
                        type_name(other)
                    ),
                ))
            }
        };
        let patch_list: Option<&[Value]> = match patch_field {
            None => None,
            Some(Value::Array(items)) => Some(items),
            Some(other) => {
                return Err(fail(
                    path,
                    format!(
                        "{directive} applies to a list, but the patch sets {field} to {} {}",
                        a_or_an(other),
                        type_name(other)
                    ),
                ))
            }
        };
        let child = path.field(field);
        let strategy = self.list_strategy(&child);
        let key = strategy.merge_key();
        validate_order(patch_list.unwrap_or(&[]), order, key, &directive, path)?;

        let merged = match (original, patch_list) {
            (None, None) => return Ok(()),
            (Some(original), None) => original.to_vec(),
            (original, Some(patch)) => {
                self.merge_list(original.unwrap_or(&[]), patch, strategy, &child)?
            }
        };
        let element = element_kind(
            &[original.unwrap_or(&[]), patch_list.unwrap_or(&[])],
            &child,
        )?;
        let by_key = match (element, key) {
            (Some(Element::Map), Some(key)) => Some(key),
            _ => None,
        };

        let id = |item: &Value| match by_key {
            Some(key) => item.get(key).map(identity).unwrap_or_default(),
            None => identity(item),
        };
        if let Some(key) = by_key {
            for item in merged.iter().chain(original.unwrap_or(&[])).chain(order) {
                if item.get(key).is_none() {
                    return Err(no_merge_key(&child, item, key));
                }
            }
        }
        let order_ids: Vec<String> = order.iter().map(id).collect();
        let server_ids: Vec<String> = original.unwrap_or(&[]).iter().map(id).collect();
        let ordered = order_items(merged, &order_ids, &server_ids, &id);
        result.insert(field.to_string(), Value::Array(ordered));
        Ok(())
    }

    fn delete_from_primitive_list(
        &self,
        result: &mut Map<String, Value>,
        field: &str,
        doomed: &Value,
        path: &Path<'_>,
    ) -> Result<(), PatchError> {
        let directive = format!("{DELETE_FROM_PRIMITIVE_LIST_PREFIX}/{field}");
        let Value::Array(doomed) = doomed else {
            return Err(fail(
                path,
                format!(
                    "invalid patch format of primitive list: {directive} must be a list, but received {}",
                    type_name(doomed)
                ),
            ));
        };
        let original = match result.get(field) {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(fail(
                    path,
                    format!(
                        "{directive} applies to a list, but {field} is {} {}",
                        a_or_an(other),
                        type_name(other)
                    ),
                ))
            }
        };
        let child = path.field(field);
        if element_kind(&[original, doomed], &child)? == Some(Element::Map) {
            return Err(fail(
                path,
                format!(
                    "invalid patch format of primitive list: {directive} can only delete primitive values"
                ),
            ));
        }
        let doomed: HashSet<String> = doomed.iter().map(identity).collect();
        let kept: Vec<Value> = original
            .iter()
            .filter(|v| !doomed.contains(&identity(v)))
            .cloned()
            .collect();
        result.insert(field.to_string(), Value::Array(kept));
        Ok(())
    }
}

/// A list-of-maps patch taken apart: deletions applied to a copy of the
/// original, `$patch: replace` noted, and the remaining items with their
/// merge-key identities.
struct ListPatch<'p> {
    working: Vec<Value>,
    server_order: Vec<String>,
    positions: HashMap<String, usize>,
    plain: Vec<(usize, &'p Map<String, Value>, String)>,
    replace: bool,
}

/// apimachinery's `mergeSliceWithSpecialElements` plus the merge-key checks
/// it performs before ordering. Kept apart from the recursive merge so that
/// its locals do not weigh on every recursion frame.
fn split_list_patch<'p>(
    original: &[Value],
    patch: &'p [Value],
    key: &str,
    path: &Path<'_>,
) -> Result<ListPatch<'p>, PatchError> {
    let mut working: Vec<Value> = original.to_vec();
    let mut plain = Vec::new();
    let mut replace = false;
    for (i, item) in patch.iter().enumerate() {
        let item_path = path.index(i);
        let Value::Object(map) = item else {
            return Err(expected_map(&item_path, item));
        };
        let Some(directive) = map.get(PATCH_DIRECTIVE) else {
            let Some(key_value) = map.get(key) else {
                return Err(no_merge_key(&item_path, item, key));
            };
            plain.push((i, map, identity(key_value)));
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(doomed) = map.get(key) else {
                    return Err(no_merge_key(&item_path, item, key));
                };
                let doomed = identity(doomed);
                working.retain(|w| w.get(key).map(identity).as_deref() != Some(doomed.as_str()));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(fail(
                    &item_path,
                    "merging lists cannot yet be specified in the patch",
                ))
            }
            _ => return Err(unknown_patch_type(&item_path, directive)),
        }
    }
    let mut server_order = Vec::new();
    let mut positions = HashMap::new();
    if !replace {
        server_order.reserve(working.len());
        for item in &working {
            match item.get(key) {
                Some(v) => server_order.push(identity(v)),
                None => return Err(no_merge_key(path, item, key)),
            }
        }
        positions.reserve(working.len());
        for (i, id) in server_order.iter().enumerate() {
            positions.entry(id.clone()).or_insert(i);
        }
    }
    Ok(ListPatch {
        working,
        server_order,
        positions,
        plain,
        replace,
    })
}

/// Union of two primitive lists as an ordered set (apimachinery's
/// `deduplicateScalars` followed by `normalizeElementOrder`).
fn merge_primitives(original: &[Value], patch: &[Value]) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut merged = Vec::with_capacity(original.len() + patch.len());
    for item in original.iter().chain(patch) {
        if seen.insert(identity(item)) {
            merged.push(item.clone());
        }
    }
    let patch_order: Vec<String> = patch.iter().map(identity).collect();
    let server_order: Vec<String> = original.iter().map(identity).collect();
    order_items(merged, &patch_order, &server_order, &identity)
}

/// Clears the fields of `result` that `$retainKeys` does not list, after
/// checking that the patch itself sets no field outside the list.
fn apply_retain_keys(
    result: &mut Map<String, Value>,
    retain: &Value,
    keys: &[(&str, Key<'_>, &Value)],
    path: &Path<'_>,
) -> Result<(), PatchError> {
    let Value::Array(retain) = retain else {
        return Err(fail(
            path,
            format!(
                "invalid patch format of retainKeys: {RETAIN_KEYS_DIRECTIVE} must be a list of field names, but received {}",
                type_name(retain)
            ),
        ));
    };
    let retained = |name: &str| retain.iter().any(|r| r.as_str() == Some(name));
    for (name, key, value) in keys {
        if matches!(key, Key::Field) && !value.is_null() && !retained(name) {
            return Err(fail(
                path,
                format!(
                    "invalid patch format of retainKeys: the patch sets field \"{name}\", which {RETAIN_KEYS_DIRECTIVE} does not list"
                ),
            ));
        }
    }
    result.retain(|name, _| retained(name));
    Ok(())
}

/// apimachinery's `validatePatchWithSetOrderList`: the patch's items must
/// appear in `$setElementOrder` in the same relative order.
fn validate_order(
    patch: &[Value],
    order: &[Value],
    key: Option<&str>,
    directive: &str,
    path: &Path<'_>,
) -> Result<(), PatchError> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut items: Vec<&Value> = Vec::with_capacity(patch.len());
    for item in patch {
        if key.is_some() {
            let Value::Object(map) = item else {
                return Err(fail(
                    path,
                    format!(
                        "invalid patch format of setElementOrder list: {directive} orders a list of maps, but the patch has {} {} item",
                        a_or_an(item),
                        type_name(item)
                    ),
                ));
            };
            if map.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        items.push(item);
    }
    let same = |a: &Value, b: &Value| -> Result<bool, PatchError> {
        let Some(key) = key else {
            return Ok(identity(a) == identity(b));
        };
        let left = a.get(key).ok_or_else(|| no_merge_key(path, a, key))?;
        let right = b.get(key).ok_or_else(|| no_merge_key(path, b, key))?;
        Ok(identity(left) == identity(right))
    };
    let (mut p, mut o) = (0, 0);
    while p < items.len() && o < order.len() {
        if items[p].get(PATCH_DIRECTIVE).is_some() {
            p += 1;
            continue;
        }
        if same(items[p], &order[o])? {
            p += 1;
        }
        o += 1;
    }
    if let Some(stray) = items.get(p) {
        return Err(fail(
            path,
            format!(
                "The order in patch list doesn't match {directive} list: {} is missing from it or out of order",
                show(stray)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(kind: &str, target: Value, patch: Value) -> Value {
        let before = target.clone();
        let out = match strategic_merge(kind, &target, &patch) {
            Ok(out) => out,
            Err(e) => panic!("unexpected error: {e}"),
        };
        assert_eq!(target, before, "target must not be mutated");
        // Same inputs, same output.
        assert_eq!(
            strategic_merge(kind, &target, &patch).ok(),
            Some(out.clone())
        );
        out
    }

    fn smp_err(kind: &str, target: Value, patch: Value, needles: &[&str]) -> String {
        let err = match strategic_merge(kind, &target, &patch) {
            Ok(out) => panic!("expected an error, got {out}"),
            Err(e) => e,
        };
        let msg = err.to_string();
        for needle in needles {
            assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        }
        msg
    }

    fn names(list: &Value) -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a", "b"]},
            "spec": {
                "containers": [
                    {"name": "web", "image": "nginx:1.25",
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                    {"name": "sidecar", "image": "busybox", "args": ["sleep", "1d"]}
                ],
                "tolerations": [{"key": "k1", "operator": "Exists"}],
                "volumes": [{"name": "data", "emptyDir": {}}]
            }
        })
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [
                        {"name": "ctr", "image": "nginx:1.25"},
                        {"name": "sidecar", "image": "envoy:1"}
                    ]}
                }
            }
        })
    }

    #[test]
    fn container_image_by_name() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "sidecar", "image": "busybox:1.36"}]}}),
        );
        let containers = &out["spec"]["containers"];
        assert_eq!(names(containers), ["web", "sidecar"]);
        assert_eq!(containers[1]["image"], "busybox:1.36");
        assert_eq!(containers[1]["args"], json!(["sleep", "1d"]));
        assert_eq!(containers[0], pod()["spec"]["containers"][0]);
    }

    #[test]
    fn kubectl_set_image_on_deployment() {
        let patch: Value = serde_json::from_str(
            r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"ctr"}],"containers":[{"image":"nginx:1.26","name":"ctr"}]}}}}"#,
        )
        .unwrap();
        let out = smp("Deployment", deployment(), patch);
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            containers,
            &json!([
                {"name": "ctr", "image": "nginx:1.26"},
                {"name": "sidecar", "image": "envoy:1"}
            ])
        );
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(
            out["spec"]["template"]["spec"].get("$setElementOrder/containers"),
            None
        );
    }

    #[test]
    fn same_podspec_rules_in_cronjob() {
        let cronjob = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]}]
        }}}}}});
        let out = smp(
            "CronJob",
            cronjob,
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "a", "env": [{"name": "F", "value": "2"}]}]
            }}}}}}),
        );
        let c = &out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "x");
        assert_eq!(names(&c[0]["env"]), ["F", "E"]);
    }

    #[test]
    fn env_add_replace_and_delete() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "web", "env": [
                {"name": "B", "value": "two"},
                {"name": "C", "value": "3"},
                {"name": "A", "$patch": "delete"}
            ]}]}}),
        );
        let env = &out["spec"]["containers"][0]["env"];
        assert_eq!(
            env,
            &json!([{"name": "B", "value": "two"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(out["spec"]["containers"][0]["image"], "nginx:1.25");
    }

    #[test]
    fn delete_by_merge_key_removes_every_match() {
        let target = json!({"spec": {"containers": [{"name": "c", "env": [
            {"name": "1"}, {"name": "1"}, {"name": "2", "value": "a"}, {"name": "3"}, {"name": "3"}
        ]}]}});
        let out = smp(
            "Pod",
            target,
            json!({"spec": {"containers": [{"name": "c", "env": [
                {"name": "1", "$patch": "delete"}, {"name": "3", "$patch": "delete"}
            ]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "2", "value": "a"}])
        );
    }

    #[test]
    fn items_new_to_the_list_come_first_without_set_element_order() {
        // apimachinery's placement; kubectl sends $setElementOrder to choose.
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "extra", "image": "redis"}]}}),
        );
        assert_eq!(
            names(&out["spec"]["containers"]),
            ["extra", "web", "sidecar"]
        );
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}, {"name": "extra"}],
                "containers": [{"name": "extra", "image": "redis"}]
            }}),
        );
        assert_eq!(
            names(&out["spec"]["containers"]),
            ["web", "sidecar", "extra"]
        );
    }

    #[test]
    fn patch_order_is_preserved_among_named_items() {
        // apimachinery test "preserve the order from the patch in a merging list".
        let target = json!({"spec": {"volumes": [
            {"name": "1"}, {"name": "2", "secret": {"secretName": "b"}}, {"name": "3"}
        ]}});
        let out = smp(
            "Pod",
            target,
            json!({"spec": {"volumes": [
                {"name": "3", "emptyDir": {}}, {"name": "1", "hostPath": {"path": "/a"}},
                {"name": "2", "configMap": {"name": "x"}}
            ]}}),
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([
                {"name": "3", "emptyDir": {}},
                {"name": "1", "hostPath": {"path": "/a"}},
                {"name": "2", "secret": {"secretName": "b"}, "configMap": {"name": "x"}}
            ])
        );
        // And "preserve the order from the patch in a merging list 2".
        let target =
            json!({"spec": {"volumes": [{"name": "1"}, {"name": "2", "v": "b"}, {"name": "3"}]}});
        let out = smp(
            "Pod",
            target,
            json!({"spec": {"volumes": [{"name": "3", "v": "c"}, {"name": "1", "v": "a"}]}}),
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "2", "v": "b"}, {"name": "3", "v": "c"}, {"name": "1", "v": "a"}])
        );
    }

    #[test]
    fn set_element_order_with_server_only_items() {
        // apimachinery test "set elements order in a list with server-only items 2".
        let target = json!({"spec": {"containers": [
            {"name": "1", "other": "a"}, {"name": "2", "value": "2"}, {"name": "9"},
            {"name": "3", "value": "3"}, {"name": "4", "value": "4"}
        ]}});
        let out = smp(
            "Pod",
            target,
            json!({"spec": {"$setElementOrder/containers": [
                {"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}
            ]}}),
        );
        assert_eq!(names(&out["spec"]["containers"]), ["2", "1", "9", "4", "3"]);
        assert_eq!(out["spec"]["containers"][1]["other"], "a");

        // ... "server-only items 3".
        let target = json!({"spec": {"containers": [
            {"name": "1"}, {"name": "2"}, {"name": "7"}, {"name": "9"}, {"name": "8"},
            {"name": "3"}, {"name": "4"}
        ]}});
        let out = smp(
            "Pod",
            target,
            json!({"spec": {"$setElementOrder/containers": [
                {"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}
            ]}}),
        );
        assert_eq!(
            names(&out["spec"]["containers"]),
            ["2", "1", "7", "9", "8", "4", "3"]
        );
    }

    #[test]
    fn set_element_order_adds_and_orders() {
        // apimachinery test "merge lists of maps" (three-way result).
        let target = json!({"spec": {"containers": [
            {"name": "1", "other": "a"}, {"name": "2", "value": "2", "other": "b"}
        ]}});
        let out = smp(
            "Pod",
            target,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "4"}, {"name": "1"}, {"name": "2"}, {"name": "3"}],
                "containers": [{"name": "4", "value": "4"}, {"name": "3", "value": "3"}]
            }}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([
                {"name": "4", "value": "4"},
                {"name": "1", "other": "a"},
                {"name": "2", "value": "2", "other": "b"},
                {"name": "3", "value": "3"}
            ])
        );
    }

    #[test]
    fn set_element_order_on_primitive_list() {
        // apimachinery test "add an item in a list of primitives and preserve order".
        let target = json!({"metadata": {"finalizers": ["1", "4", "2"]}});
        let out = smp(
            "ConfigMap",
            target,
            json!({"metadata": {
                "$setElementOrder/finalizers": ["3", "1", "2"],
                "finalizers": ["3"]
            }}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["3", "1", "4", "2"]));
        // Items named only by the order list are not added.
        let out = smp(
            "ConfigMap",
            json!({"metadata": {"finalizers": ["1", "3"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["3", "2", "1"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["3", "1"]));
    }

    #[test]
    fn set_element_order_must_agree_with_the_patch() {
        smp_err(
            "Pod",
            json!({"spec": {"containers": [{"name": "1"}, {"name": "3"}, {"name": "2"}]}}),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
                "containers": [{"name": "3", "value": 3}, {"name": "1", "value": 1}]
            }}),
            &["doesn't match $setElementOrder/containers", "at spec"],
        );
    }

    #[test]
    fn retain_keys_clears_unlisted_fields() {
        let out = smp(
            "Deployment",
            deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

        // kubectl apply switching a volume's source.
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {
                "$setElementOrder/volumes": [{"name": "data"}],
                "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "name": "data"}]
            }}),
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "data", "configMap": {"name": "cm"}}])
        );

        smp_err(
            "Deployment",
            deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}),
            &["retainKeys", "\"rollingUpdate\"", "spec.strategy"],
        );
        smp_err(
            "Deployment",
            deployment(),
            json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
            &["$retainKeys must be a list"],
        );
    }

    #[test]
    fn delete_from_primitive_list() {
        let out = smp(
            "Pod",
            pod(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zzz"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(
            out["metadata"].get("$deleteFromPrimitiveList/finalizers"),
            None
        );

        // Works on lists without a merge strategy too, and never adds a list.
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "sidecar", "$deleteFromPrimitiveList/args": ["1d"]}],
                            "$deleteFromPrimitiveList/nothingHere": ["x"]}}),
        );
        assert_eq!(out["spec"]["containers"][1]["args"], json!(["sleep"]));
        assert_eq!(out["spec"].get("nothingHere"), None);

        // With setElementOrder, as kubectl apply sends it.
        let out = smp(
            "Pod",
            json!({"metadata": {"finalizers": ["1", "2", "3"]}}),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["2", "1"],
                "$deleteFromPrimitiveList/finalizers": ["3"]
            }}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["2", "1"]));
    }

    #[test]
    fn finalizers_union() {
        let out = smp(
            "Pod",
            pod(),
            json!({"metadata": {"finalizers": ["b", "c", "c"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let out = smp("Pod", pod(), json!({"metadata": {"finalizers": ["c"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
        let out = smp(
            "Namespace",
            json!({"metadata": {}}),
            json!({"metadata": {"finalizers": ["x"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["x"]));
    }

    #[test]
    fn replace_list_directive() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x", "env": null}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "web", "env": [{"$patch": "replace"}]}]}}),
        );
        assert_eq!(out["spec"]["containers"][0]["env"], json!([]));
    }

    #[test]
    fn map_directives() {
        let target =
            json!({"metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"x": "y"}}});
        let out = smp(
            "ConfigMap",
            target.clone(),
            json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
        let out = smp(
            "ConfigMap",
            target.clone(),
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
        );
        assert_eq!(out["metadata"], json!({"annotations": {"x": "y"}}));
        let out = smp(
            "ConfigMap",
            target.clone(),
            json!({"metadata": {"labels": {"$patch": "merge", "c": "3"}}}),
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"a": "1", "b": "2", "c": "3"})
        );
        let out = smp(
            "ConfigMap",
            target,
            json!({"$patch": "replace", "data": {"k": "v"}}),
        );
        assert_eq!(out, json!({"data": {"k": "v"}}));
    }

    #[test]
    fn null_deletes_and_new_values_are_cleaned() {
        let out = smp(
            "Pod",
            pod(),
            json!({"metadata": {"labels": {"tier": null, "missing": null}},
                   "spec": {"securityContext": {"runAsUser": null, "fsGroup": 1, "seLinuxOptions": {"$patch": "delete"}},
                            "volumes": null}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(out["spec"]["securityContext"], json!({"fsGroup": 1}));
        assert_eq!(out["spec"].get("volumes"), None);
    }

    #[test]
    fn lists_without_strategy_are_replaced() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"tolerations": [{"key": "k2", "operator": "Equal", "value": "v"}],
                            "containers": [{"name": "sidecar", "args": ["echo"]}]}}),
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "k2", "operator": "Equal", "value": "v"}])
        );
        assert_eq!(out["spec"]["containers"][1]["args"], json!(["echo"]));
        // Unknown kinds only know the metadata rules.
        let out = smp(
            "Widget",
            json!({"spec": {"containers": [{"name": "a", "x": 1}]}}),
            json!({"spec": {"containers": [{"name": "b"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
    }

    #[test]
    fn other_merge_keys() {
        let out = smp(
            "Service",
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}),
            json!({"spec": {"ports": [{"port": 80.0, "targetPort": 9090}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            // Matched despite the float spelling; the patch's value is kept.
            json!([{"port": 80.0, "targetPort": 9090}, {"port": 443}])
        );
        let out = smp(
            "Node",
            json!({"status": {
                "conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]
            }}),
            json!({"status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}]
            }}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}])
        );
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.1"}])
        );
        let out = smp(
            "ConfigMap",
            json!({"metadata": {"ownerReferences": [{"uid": "u1", "name": "a"}]}}),
            json!({"metadata": {"ownerReferences": [{"uid": "u1", "controller": true}]}}),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "u1", "name": "a", "controller": true}])
        );
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80, "name": "http"}]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
        );
    }

    #[test]
    fn malformed_patches() {
        smp_err(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "web", "$patch": "frobnicate"}]}}),
            &["unknown patch type: frobnicate", "spec.containers[0]"],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"metadata": {"labels": {"$patch": 1}}}),
            &["unknown patch type: 1", "metadata.labels"],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "web", "$patch": "merge"}]}}),
            &["merging lists cannot yet be specified"],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"metadata": {"$setElementOrder/labels": ["app"]}}),
            &[
                "$setElementOrder/labels applies to a list",
                "labels is an object",
                "at metadata",
            ],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"metadata": {"$deleteFromPrimitiveList/labels": ["app"]}}),
            &[
                "$deleteFromPrimitiveList/labels applies to a list",
                "labels is an object",
            ],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
            &["invalid patch format of primitive list", "must be a list"],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"spec": {"$setElementOrder/containers": {"name": "web"}}}),
            &[
                "invalid patch format of setElementOrder list",
                "must be a list",
            ],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"spec": {"$setElementOrder": []}}),
            &["\"$setElementOrder\" must name a list field"],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"spec": {"$frobnicate": true}}),
            &[
                "unknown strategic merge patch directive \"$frobnicate\"",
                "at spec",
            ],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"image": "x"}]}}),
            &[
                "does not contain declared merge key: name",
                "spec.containers[0]",
            ],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"$patch": "delete", "image": "x"}]}}),
            &["does not contain declared merge key: name"],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"spec": {"containers": ["web"]}}),
            &["list element types are not identical", "spec.containers"],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"metadata": {"finalizers": [["a"]]}}),
            &["lists of lists are not supported", "metadata.finalizers"],
        );
        smp_err(
            "Pod",
            pod(),
            json!({"metadata": {"finalizers": [{"name": "a"}]}}),
            &["list element types are not identical"],
        );
        smp_err(
            "Pod",
            json!({"metadata": {}}),
            json!({"metadata": {"finalizers": [{"name": "a"}]}}),
            &[
                "cannot merge lists without merge key",
                "metadata.finalizers",
            ],
        );
        let err = strategic_merge("Pod", &pod(), &json!([1])).unwrap_err();
        assert!(matches!(err, PatchError::NotAnObject { .. }), "{err}");
        let err = strategic_merge("Pod", &json!("x"), &json!({})).unwrap_err();
        assert!(
            err.to_string()
                .contains("the object to patch must be a JSON object"),
            "{err}"
        );
    }

    #[test]
    fn failure_changes_nothing() {
        let target = pod();
        let err = strategic_merge(
            "Pod",
            &target,
            &json!({"metadata": {"labels": {"new": "x"}}, "spec": {"containers": [{"image": "no-name"}]}}),
        );
        assert!(err.is_err());
        assert_eq!(target, pod());
    }

    #[test]
    fn crd_schema_fields_are_not_directives() {
        let out = smp(
            "CustomResourceDefinition",
            json!({"spec": {"validation": {"$schema": "a"}}}),
            json!({"spec": {"validation": {"$schema": "b", "$ref": "#/x"}}}),
        );
        assert_eq!(
            out["spec"]["validation"],
            json!({"$schema": "b", "$ref": "#/x"})
        );
    }

    #[test]
    fn root_delete_leaves_empty_object() {
        assert_eq!(smp("Pod", pod(), json!({"$patch": "delete"})), json!({}));
    }

    #[test]
    fn identities() {
        assert_eq!(identity(&json!(80.0)), identity(&json!(80)));
        assert_ne!(identity(&json!(80.5)), identity(&json!(80)));
        assert_ne!(identity(&json!("80")), identity(&json!(80)));
        assert_eq!(show(&json!("x".repeat(500))).len(), 123);
    }
}
