# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by the collection's MongoDB modules (after community.postgresql's ``postgres`` fragment).

Matches ``mongodb_common_argument_spec()`` in ``plugins/module_utils/mongo_common.py``::

    extends_documentation_fragment:
      - nodeops.stack.mongodb
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name


class ModuleDocFragment(object):

    DOCUMENTATION = r'''
options:
  uri:
    description:
      - MongoDB connection string (C(mongodb://) or C(mongodb+srv://)), for example
        C(mongodb://backup:secret@db1:27017,db2:27017/?replicaSet=rs0&authSource=admin).
      - The password in it is masked in all output (the module result, its invocation and its log entry)
        and never appears in error messages.
      - Mutually exclusive with O(host) and O(port). When neither is given, C(localhost:27017) is used.
    type: str
  host:
    description:
      - Host name or address of the server, when O(uri) is not used. Defaults to C(localhost).
    type: str
  port:
    description:
      - TCP port of the server, when O(uri) is not used. Defaults to C(27017).
    type: int
  username:
    description:
      - User to authenticate as (overrides a user in O(uri)).
    type: str
    aliases: [login_user]
  password:
    description:
      - Password of O(username).
    type: str
    aliases: [login_password]
  auth_source:
    description:
      - Database holding the user's credentials (C(authSource)), usually C(admin).
    type: str
  tls:
    description:
      - Connect with TLS. Unset leaves it to O(uri) (or off).
    type: bool
  tls_ca_file:
    description:
      - CA bundle (PEM) used to verify the server certificate.
    type: path
  tls_certificate_key_file:
    description:
      - Client certificate and key (one PEM file) for TLS client authentication.
    type: path
  connect_timeout:
    description:
      - Seconds to wait for the server (server selection and TCP connect). An unreachable server fails the task
        with a clear message within this time.
    type: float
    default: 10
  read_preference:
    description:
      - Read preference for reading collections (C(readPreference)). Unset uses the one in O(uri), or V(primary).
      - V(secondary) or V(secondaryPreferred) keep the dump's read load off the primary of a replica set.
    type: str
    choices: [primary, primaryPreferred, secondary, secondaryPreferred, nearest]
requirements:
  - pymongo >= 4.0 (Python library on the managed node)
notes:
  - The connection options can be set once for all MongoDB modules of the collection with
    C(module_defaults) for the action group C(group/nodeops.stack.all).
'''
