"""https and tls probes against real TLS servers on 127.0.0.1 with certificates made by a test CA."""

import ssl
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from health_gate_support import run_command  # pylint: disable=import-error

from ansible_collections.nodeops.stack.plugins.module_utils import probes as probes_mod


def https_spec(server, pki, **extra):
    spec = {'kind': 'https', 'name': 'api', 'url': server.url('/health'), 'ca_path': pki.ca_path}
    spec.update(extra)
    return spec


def tls_spec(server, **extra):
    spec = {'kind': 'tls', 'name': 'cert', 'host': '127.0.0.1', 'port': server.port}
    spec.update(extra)
    return spec


def test_https_with_test_ca_passes_and_reports_tls_phase(gate, https_server, pki):
    server = https_server('valid')
    res = gate([https_spec(server, pki)], success_threshold=2)
    assert res['passed'] is True, res['msg']
    detail = res['timeline'][0]['probes'][0]['detail']
    assert set(detail) >= {'connect_ms', 'tls_ms', 'ttfb_ms', 'total_ms'}
    assert len({r['client'][1] for r in server.requests}) == 2  # a fresh TLS connection per attempt


def test_https_server_name_sets_sni_and_host(gate, https_server, pki):
    server = https_server('sni', dns=('api.test',))
    res = gate([https_spec(server, pki, server_name='api.test')], success_threshold=1)
    assert res['passed'] is True, res['msg']
    assert server.requests[0]['headers']['Host'] == 'api.test:%d' % server.port
    # a name the certificate does not carry fails hostname verification
    res = gate([https_spec(server, pki, server_name='other.test')], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    assert 'TLS handshake failed: certificate verification failed' in res['msg']
    assert 'other.test' in res['msg'] or 'Hostname mismatch' in res['msg']


def test_https_unknown_ca_fails_unless_validate_certs_false(gate, https_server, pki):
    server = https_server('selfsigned', self_signed=True)
    res = gate([{'kind': 'https', 'name': 'api', 'url': server.url('/health')}], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    assert 'certificate verification failed: self-signed certificate' in res['msg'] or 'unable to get local issuer' in res['msg']
    res = gate([{'kind': 'https', 'name': 'api', 'url': server.url('/health'), 'validate_certs': False}], success_threshold=1)
    assert res['passed'] is True, res['msg']


def test_https_client_certificate(gate, https_server, pki):
    client_cert, client_key = pki.issue('client', client=True, dns=('client.test',))
    server = https_server('mtls', client_ca=pki.ca_path)
    res = gate([https_spec(server, pki, client_cert=client_cert, client_key=client_key)], success_threshold=1)
    assert res['passed'] is True, res['msg']
    res = gate([https_spec(server, pki)], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False


def test_tls_probe_reports_days_left_and_protocol(gate, https_server, pki):
    server = https_server('long', days_valid=90)
    res = gate([tls_spec(server, ca_path=pki.ca_path, server_name='api.test', min_days_left=30, min_protocol='TLSv1.2')],
               success_threshold=1)
    assert res['passed'] is True, res['msg']
    detail = res['timeline'][0]['probes'][0]['detail']
    assert 89.9 < detail['days_left'] <= 90
    assert detail['protocol'] == 'TLSv1.3'
    assert res['timeline'][0]['probes'][0]['status'] == 'TLSv1.3'


def test_tls_certificate_expiring_in_3_days(gate, https_server, pki):
    server = https_server('short', days_valid=3)
    res = gate([tls_spec(server, ca_path=pki.ca_path, min_days_left=7)], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    assert 'expected certificate valid for at least 7 more days (min_days_left), got 2.99 days' in res['msg'] \
        or 'expected certificate valid for at least 7 more days (min_days_left), got 3.00 days' in res['msg']
    res = gate([tls_spec(server, ca_path=pki.ca_path, min_days_left=2)], success_threshold=1)
    assert res['passed'] is True, res['msg']


def test_tls_expired_certificate(gate, https_server, pki):
    server = https_server('expired', days_valid=-2, days_ago=30)
    res = gate([tls_spec(server, ca_path=pki.ca_path)], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    assert 'certificate verification failed: certificate has expired' in res['msg']
    # without validation the handshake succeeds and the expiry comes from the DER certificate
    res = gate([tls_spec(server, validate_certs=False, min_days_left=0)], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    assert -2.01 < res['timeline'][0]['probes'][0]['detail']['days_left'] < -1.99
    assert 'expected certificate valid for at least 0 more days (min_days_left), got -2.00 days' in res['msg']


def test_tls_min_protocol_tls13_against_tls12_server(gate, https_server, pki):
    server = https_server('tls12', max_version=ssl.TLSVersion.TLSv1_2)
    res = gate([tls_spec(server, ca_path=pki.ca_path)], success_threshold=1)
    assert res['timeline'][0]['probes'][0]['detail']['protocol'] == 'TLSv1.2'
    res = gate([tls_spec(server, ca_path=pki.ca_path, min_protocol='TLSv1.3')], success_threshold=1, failure_threshold=1)
    assert res['passed'] is False
    assert 'expected protocol TLSv1.3 or newer (min_protocol)' in res['msg']


@pytest.mark.parametrize('block', ['none', 'cryptography', 'cryptography+decoder'])
def test_der_not_after_fallbacks(pki, monkeypatch, block):
    """Each way of reading notAfter of an unvalidated certificate gives the same answer."""
    certfile, _key = pki.issue('der-%s' % block, days_valid=10)
    with open(certfile, 'rb') as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    der = cert.public_bytes(serialization.Encoding.DER)
    expected = cert.not_valid_after_utc.timestamp()
    if 'cryptography' in block:
        monkeypatch.setitem(sys.modules, 'cryptography', None)
    if 'decoder' in block:
        monkeypatch.delattr(ssl._ssl, '_test_decode_cert')
    assert probes_mod.der_not_after(der, run_command) == expected
    if block == 'cryptography+decoder':
        with pytest.raises(ValueError) as err:  # nothing left without a command runner
            probes_mod.der_not_after(der)
        assert 'cannot read the certificate expiry date' in str(err.value)
