'use strict';
// release.json is written by scripts/build-releases.js into every release
// tarball. It records the version, the git commit and the build time, plus
// "defaults" for the failure switches (FAIL_HEALTH, CRASH_AFTER_MS, ...) that
// bad releases bake in. Environment variables always override these defaults.

const fs = require('node:fs');
const path = require('node:path');

function readRelease(appRoot) {
  const file = path.join(appRoot, 'release.json');
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT') return { release: null };
    return { release: null, error: `release.json could not be read (${err.code || err.message})` };
  }
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    return { release: null, error: 'release.json is not valid JSON' };
  }
  if (!data || typeof data !== 'object' || Array.isArray(data)) {
    return { release: null, error: 'release.json must contain a JSON object' };
  }
  if (data.defaults !== undefined && (typeof data.defaults !== 'object' || data.defaults === null || Array.isArray(data.defaults))) {
    return { release: null, error: 'release.json "defaults" must be an object' };
  }
  return { release: data };
}

module.exports = { readRelease };
