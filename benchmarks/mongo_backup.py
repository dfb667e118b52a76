"""Benchmark of nodeops.stack.mongo_backup (not a test: it measures, it does not assert).

For each dataset size (MB of BSON):

1. Start the MongoDB wire-protocol test server (tests/support/mongo_test_server, an
   in-memory Python server) and load the dataset into it: 8 collections of
   semi-realistic ~4 KB order documents (text from a vocabulary, numbers, dates,
   nested items), so gzip has something real to chew on.
2. Dump it in a separate process (tests/integration/mongo_backup/dump_runner.py):
   gzip level 6 (the default) and compression none, parallel 2 collections. The
   dumper's own peak RSS (VmHWM from /proc/self/status) and CPU time are reported
   apart from the server's (VmHWM and CPU time of the server process).
3. Reference: the very same uncompressed BSON written with plain ``gzip -1`` (and
   ``gzip -6``, the level the dump uses) on this machine.
4. Restore the gzip backup into a fresh server (the first one is stopped first to
   keep memory bounded), again in a separate process.

The test server is pure Python, so the numbers are not those of a real mongod;
the CPU columns (dumper/restorer vs server) show which side the time went to,
and the report says it. The dumper's peak RSS is the point: it does not grow
with the data.

Prints a Markdown table and writes benchmarks/results/mongo_backup.json and .md with
the command line and a machine note.

Run from the repository root:
    .venv/bin/python benchmarks/mongo_backup.py                 # quick smoke sizes (20 MB)
    .venv/bin/python benchmarks/mongo_backup.py --sizes 100,1000
"""

import argparse
import datetime
import gzip
import importlib.util
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, '.cache', 'collections')
RUNNER = os.path.join(ROOT, 'tests', 'integration', 'mongo_backup', 'dump_runner.py')
PYTHON = sys.executable
RESULTS = os.path.join(ROOT, 'benchmarks', 'results')
COLLECTION_COUNT = 8
WORDS = ('order shipped customer invoice payment pending delivered warehouse express standard refund coupon discount '
         'priority address street city country postal phone email account premium basket checkout cart product review '
         'rating return exchange gift wrap note instructions leave door neighbour signature tracking carrier parcel').split()


def ensure_collection_link():
    ns_dir = os.path.join(COLLECTIONS, 'ansible_collections', 'nodeops')
    link = os.path.join(ns_dir, 'stack')
    os.makedirs(ns_dir, exist_ok=True)
    if not os.path.islink(link):
        os.symlink(os.path.relpath(ROOT, ns_dir), link)


def load_server_class():
    spec = importlib.util.spec_from_file_location('nodeops_mongo_conftest', os.path.join(ROOT, 'tests', 'integration', 'mongo', 'conftest.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TestServerProcess


def proc_status(pid, key):
    try:
        with open('/proc/%d/status' % pid) as fh:
            for line in fh:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_s(pid):
    with open('/proc/%d/stat' % pid) as fh:
        fields = fh.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def templates(rng, count=2000):
    import bson  # pylint: disable=import-outside-toplevel
    from bson.decimal128 import Decimal128  # pylint: disable=import-outside-toplevel
    docs = []
    base = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    for index in range(count):
        items = [{'sku': 'SKU-%05d' % rng.randrange(100000), 'qty': rng.randrange(1, 9),
                  'price': Decimal128('%d.%02d' % (rng.randrange(500), rng.randrange(100))),
                  'name': ' '.join(rng.choice(WORDS) for _word in range(6))} for _item in range(rng.randrange(3, 12))]
        doc = {
            'customer': {'name': '%s %s' % (rng.choice(WORDS).title(), rng.choice(WORDS).title()), 'email': 'user%d@example.com' % rng.randrange(10 ** 6),
                         'address': {'street': '%d %s street' % (rng.randrange(999), rng.choice(WORDS)), 'city': rng.choice(WORDS).title(),
                                     'postal': '%05d' % rng.randrange(99999)}},
            'status': rng.choice(('pending', 'paid', 'shipped', 'delivered', 'refunded')),
            'created': base + datetime.timedelta(seconds=rng.randrange(10 ** 7)),
            'items': items,
            'notes': ' '.join(rng.choice(WORDS) for _word in range(rng.randrange(150, 400))),
            'ref': os.urandom(12).hex(),
        }
        docs.append(doc)
    sizes = [len(bson.encode(d)) for d in docs]
    return docs, sum(sizes) / len(sizes)


def load(uri, size_mb, rng):
    """Insert about size_mb MB of BSON into COLLECTION_COUNT collections; returns (documents, bson bytes, seconds)."""
    import bson  # pylint: disable=import-outside-toplevel
    from bson.raw_bson import RawBSONDocument  # pylint: disable=import-outside-toplevel
    from pymongo import MongoClient  # pylint: disable=import-outside-toplevel
    docs, average = templates(rng)
    total_docs = int(size_mb * 1e6 / average)
    per_collection = total_docs // COLLECTION_COUNT
    client = MongoClient(uri)
    db = client.bench
    start = time.monotonic()
    written = 0
    count = 0
    for coll_index in range(COLLECTION_COUNT):
        coll = db['orders_%d' % coll_index]
        batch = []
        for index in range(per_collection):
            doc = dict(docs[(index * 7 + coll_index) % len(docs)])
            doc['_id'] = index
            raw = bson.encode(doc)
            written += len(raw)
            batch.append(RawBSONDocument(raw))
            if len(batch) == 2000:
                coll.insert_many(batch, ordered=False)
                count += len(batch)
                batch = []
        if batch:
            coll.insert_many(batch, ordered=False)
            count += len(batch)
    elapsed = time.monotonic() - start
    client.close()
    return count, written, elapsed


def run_op(params):
    proc = subprocess.run([PYTHON, RUNNER, json.dumps(params)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
                          env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    lines = proc.stdout.decode().strip().splitlines()
    if not lines:
        raise RuntimeError('runner printed nothing: %s' % proc.stderr.decode()[-2000:])
    out = json.loads(lines[-1])
    if not out.get('ok'):
        raise RuntimeError('runner failed: %s' % out.get('error'))
    return out


def concat_bson(backup_path, target):
    """Write the uncompressed BSON of every data file of a gzip backup into one file (the gzip reference input)."""
    with open(os.path.join(backup_path, 'manifest.json')) as fh:
        manifest = json.load(fh)
    with open(target, 'wb') as out:
        for coll in manifest['collections']:
            if coll.get('file'):
                with gzip.open(os.path.join(backup_path, coll['file'])) as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
    return os.path.getsize(target)


def gzip_reference(path, level):
    start = time.monotonic()
    with open(os.devnull, 'wb') as sink:
        subprocess.run(['gzip', '-%d' % level, '-c', path], stdout=sink, check=True)
    return time.monotonic() - start


def bench_size(server_cls, size_mb, workdir, parallel, rng):
    row = {'size_mb': size_mb}
    server = server_cls()
    try:
        uri = server.uri
        docs, bson_bytes, load_s = load(uri, size_mb, rng)
        row.update(documents=docs, bson_mb=round(bson_bytes / 1e6, 1), load_s=round(load_s, 1),
                   server_rss_loaded_mb=round((proc_status(server.proc.pid, 'VmRSS') or 0) / 1024, 1))
        os.makedirs(os.path.join(workdir, 'idle'))
        idle = run_op({'mode': 'list', 'uri': uri, 'backup_dir': os.path.join(workdir, 'idle')})
        row['runner_idle_vmhwm_mb'] = round(idle['vmhwm_kb'] / 1024, 1)
        for compression in ('gzip', 'none'):
            root = os.path.join(workdir, 'backups-%s' % compression)
            cpu0 = proc_cpu_s(server.proc.pid)
            out = run_op({'mode': 'dump', 'uri': uri, 'backup_dir': root, 'databases': ['bench'], 'compression': compression,
                          'parallel': parallel})
            server_cpu = proc_cpu_s(server.proc.pid) - cpu0
            result = out['result']
            key = 'dump_%s' % compression
            row[key] = {
                'seconds': out['elapsed_s'], 'mb_s': round(bson_bytes / 1e6 / out['elapsed_s'], 1),
                'docs_s': round(docs / out['elapsed_s']), 'dumper_vmhwm_mb': round(out['vmhwm_kb'] / 1024, 1),
                'dumper_cpu_s': out['cpu_s'], 'server_cpu_s': round(server_cpu, 1),
                'file_mb': round(result['backup']['size_bytes'] / 1e6, 1), 'backup': result['backup']['path'],
            }
        row['server_vmhwm_mb'] = round((proc_status(server.proc.pid, 'VmHWM') or 0) / 1024, 1)
    finally:
        server.stop()
    gzip_backup = row['dump_gzip']['backup']
    flat = os.path.join(workdir, 'all.bson')
    flat_bytes = concat_bson(gzip_backup, flat)
    for level in (1, 6):
        seconds = gzip_reference(flat, level)
        row['gzip_%d' % level] = {'seconds': round(seconds, 2), 'mb_s': round(flat_bytes / 1e6 / seconds, 1)}
    os.unlink(flat)
    shutil.rmtree(row['dump_none']['backup'])
    server = server_cls()
    try:
        cpu0 = proc_cpu_s(server.proc.pid)
        out = run_op({'mode': 'restore', 'uri': server.uri, 'backup_dir': os.path.dirname(gzip_backup), 'backup_name': 'latest',
                      'parallel': parallel})
        server_cpu = proc_cpu_s(server.proc.pid) - cpu0
        inserted = out['result']['totals']['inserted']
        assert inserted == docs, (inserted, docs)
        row['restore_gzip'] = {
            'seconds': out['elapsed_s'], 'mb_s': round(bson_bytes / 1e6 / out['elapsed_s'], 1), 'docs_s': round(docs / out['elapsed_s']),
            'restorer_vmhwm_mb': round(out['vmhwm_kb'] / 1024, 1), 'restorer_cpu_s': out['cpu_s'], 'server_cpu_s': round(server_cpu, 1),
        }
        row['restore_server_vmhwm_mb'] = round((proc_status(server.proc.pid, 'VmHWM') or 0) / 1024, 1)
    finally:
        server.stop()
    shutil.rmtree(os.path.dirname(gzip_backup))
    return row


def bottleneck_note(rows):
    """Where the CPU time went, from the numbers (not assumed)."""
    notes = []
    for row in rows:
        parts = []
        for key, label in (('dump_gzip', 'gzip dump'), ('dump_none', 'uncompressed dump'), ('restore_gzip', 'restore')):
            cell = row[key]
            own = cell.get('dumper_cpu_s', cell.get('restorer_cpu_s'))
            side = 'the dumper/restorer' if own >= cell['server_cpu_s'] else 'the test server'
            parts.append('%s: %s (%.1f s own vs %.1f s server CPU)' % (label, side, own, cell['server_cpu_s']))
        notes.append('%s MB: %s' % (row['bson_mb'], '; '.join(parts)))
    return ('the test server hands out stored raw BSON cheaply, so in these runs the busier side was ' + ' | '.join(notes) +
            '. Compression (zlib level 6 in the dumper, the same algorithm as gzip -6) dominates gzip dumps; the machine was shared, '
            'so wall times are longer than CPU times suggest.')


def markdown(rows, command, machine):
    lines = ['# mongo_backup benchmark', '', '`%s`' % command, '', 'Machine: %s' % machine, '',
             'Server: the in-memory Python wire-protocol test server (tests/support/mongo_test_server), not a real mongod. '
             'Dumper/restorer: a separate process running the module code; "own" peak RSS is its VmHWM, "runner idle" is the '
             'same process doing nothing (interpreter + ansible + pymongo). The CPU columns show where the time goes: ' +
             bottleneck_note(rows), '',
             '## Dump (parallel 2) and restore', '',
             '| dataset | docs | operation | seconds | MB/s | docs/s | own peak RSS (MB) | own CPU (s) | server CPU (s) | files (MB) |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        for key, label in (('dump_gzip', 'dump gzip-6'), ('dump_none', 'dump none'), ('restore_gzip', 'restore (gzip backup)')):
            cell = row[key]
            lines.append('| %s MB | %d | %s | %.1f | %.1f | %d | %.1f | %.1f | %.1f | %s |' % (
                row['bson_mb'], row['documents'], label, cell['seconds'], cell['mb_s'], cell['docs_s'],
                cell.get('dumper_vmhwm_mb', cell.get('restorer_vmhwm_mb')), cell.get('dumper_cpu_s', cell.get('restorer_cpu_s')),
                cell['server_cpu_s'], cell.get('file_mb', '')))
    lines += ['', '## Memory and references', '',
              '| dataset | runner idle peak RSS (MB) | dumper peak RSS (MB) | server RSS loaded (MB) | server peak RSS (MB) | '
              'restore server peak RSS (MB) | gzip -1 MB/s | gzip -6 MB/s | load into server (s) |',
              '|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        lines.append('| %s MB | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |' % (
            row['bson_mb'], row['runner_idle_vmhwm_mb'], max(row['dump_gzip']['dumper_vmhwm_mb'], row['dump_none']['dumper_vmhwm_mb']),
            row['server_rss_loaded_mb'], row['server_vmhwm_mb'], row['restore_server_vmhwm_mb'], row['gzip_1']['mb_s'],
            row['gzip_6']['mb_s'], row['load_s']))
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--sizes', default='20', help='comma-separated dataset sizes in MB of BSON (default 20; e.g. 100,1000)')
    parser.add_argument('--parallel', type=int, default=2)
    parser.add_argument('--no-save', action='store_true', help='print only, do not write benchmarks/results')
    args = parser.parse_args()
    ensure_collection_link()
    sys.path.insert(0, COLLECTIONS)
    server_cls = load_server_class()
    rng = random.Random(42)
    rows = []
    workdir = tempfile.mkdtemp(prefix='mongo_backup_bench-')
    try:
        for size in [int(s) for s in args.sizes.split(',') if s.strip()]:
            sub = os.path.join(workdir, str(size))
            os.makedirs(sub)
            rows.append(bench_size(server_cls, size, sub, args.parallel, rng))
            print('done %d MB' % size, file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for row in rows:
        for key in ('dump_gzip', 'dump_none'):
            row[key].pop('backup', None)
    command = '.venv/bin/python benchmarks/mongo_backup.py' + (' --sizes %s' % args.sizes if args.sizes != '20' else '')
    load = os.getloadavg()
    machine = '%d CPU(s), %.1f GB RAM, Python %s, %s; %s; load average at the end %.2f/%.2f/%.2f (other work on the machine skews the numbers)' % (
        os.cpu_count(), os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1e9, platform.python_version(), platform.platform(),
        datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'), *load)
    text = markdown(rows, command, machine)
    print(text)
    if not args.no_save:
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, 'mongo_backup.json'), 'w') as fh:
            json.dump({'command': command, 'machine': machine, 'rows': rows}, fh, indent=2)
        with open(os.path.join(RESULTS, 'mongo_backup.md'), 'w') as fh:
            fh.write(text)


if __name__ == '__main__':
    main()
