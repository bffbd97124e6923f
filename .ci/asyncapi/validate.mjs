// Validates AsyncAPI 3.0.0 documents (JSON or YAML) with the official parser.
//
//   node .ci/asyncapi/validate.mjs [--same] <file>...
//
// With --same, the files must also hold one document: the same data once read as JSON or
// YAML (so the YAML the service serves says exactly what its JSON says).
//
// Prints every diagnostic (severity, code, message, JSON path, line:column) and a one-line
// summary per file. Exits 1 if any file does not parse into a document, has an error-severity
// diagnostic, or is not AsyncAPI 3.0.0; warnings and infos are printed but do not fail.
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Parser } from '@asyncapi/parser';
import yaml from 'js-yaml';

const EXPECTED_VERSION = '3.0.0';
// Spectral's DiagnosticSeverity: Error = 0, Warning = 1, Information = 2, Hint = 3.
const SEVERITY_NAMES = ['error', 'warning', 'info', 'hint'];

/** `$.channels['orders.{id}:OnOrder'].address` from Spectral's path segments. */
function jsonPath(segments) {
  let path = '$';
  for (const segment of segments ?? []) {
    if (typeof segment === 'number') {
      path += `[${segment}]`;
    } else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(segment)) {
      path += `.${segment}`;
    } else {
      path += `[${JSON.stringify(segment)}]`;
    }
  }
  return path;
}

/** Ranges are zero-based; editors count from one. */
function lineColumn(range) {
  if (!range?.start) return '';
  return ` (line ${range.start.line + 1}:${range.start.character + 1})`;
}

async function validateFile(parser, file) {
  let text;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    console.log(`${file}: cannot read: ${err.message}`);
    return false;
  }

  // The parser takes JSON or YAML text alike; `source` lets it name the file and resolve
  // relative `$ref`s against it.
  const { document, diagnostics } = await parser.parse(text, { source: resolve(file) });

  const counts = [0, 0, 0, 0];
  for (const d of diagnostics) {
    counts[d.severity] = (counts[d.severity] ?? 0) + 1;
    const severity = SEVERITY_NAMES[d.severity] ?? `severity ${d.severity}`;
    console.log(`${file}: ${severity} ${d.code}: ${d.message} at ${jsonPath(d.path)}${lineColumn(d.range)}`);
  }
  const [errors, warnings, infos] = counts;

  if (document === undefined) {
    console.log(`${file}: FAILED: not parsed into a document (${errors} errors, ${warnings} warnings)`);
    return false;
  }

  const version = document.version();
  const versionOk = version === EXPECTED_VERSION;
  if (!versionOk) {
    console.log(`${file}: error: asyncapi is ${JSON.stringify(version)}, expected ${EXPECTED_VERSION}`);
  }

  const ok = versionOk && errors === 0;
  const summary = [
    `${document.allChannels().length} channels`,
    `${document.allOperations().length} operations`,
    `${document.allMessages().length} messages`,
    `${document.allSchemas().length} schemas (${document.components().schemas().length} in components)`,
    `${errors} errors, ${warnings} warnings, ${infos} infos`,
  ].join(', ');
  console.log(`${file}: ${ok ? 'OK' : 'FAILED'}: AsyncAPI ${version}: ${summary}`);
  return ok;
}

const args = process.argv.slice(2);
const same = args[0] === '--same';
const files = same ? args.slice(1) : args;
if (files.length === 0) {
  console.error('usage: node .ci/asyncapi/validate.mjs [--same] <file>...');
  process.exit(2);
}

/** A value with its object keys sorted, for comparing documents written in any order. */
function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((key) => [key, canonical(value[key])]));
  }
  return value;
}

/** Whether every file holds the same data (JSON is YAML, so one reader takes both). */
async function allSame(paths) {
  let first;
  for (const file of paths) {
    // JSON_SCHEMA: no YAML 1.1 surprises such as `yes` read as true.
    const data = JSON.stringify(canonical(yaml.load(await readFile(file, 'utf8'), { schema: yaml.JSON_SCHEMA })));
    if (first === undefined) {
      first = { file, data };
    } else if (data !== first.data) {
      console.log(`${file}: FAILED: not the same document as ${first.file}`);
      return false;
    }
  }
  console.log(`${paths.length} files hold the same document`);
  return true;
}

const parser = new Parser();
let allOk = true;
for (const file of files) {
  // Files are validated one after another so each file's lines stay together.
  if (!(await validateFile(parser, file))) allOk = false;
}
if (same && !(await allSame(files))) allOk = false;
process.exit(allOk ? 0 : 1);
