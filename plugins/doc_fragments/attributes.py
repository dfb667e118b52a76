# -*- coding: utf-8 -*-
# Copyright (c) nodeops.stack maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared ``attributes`` documentation, after community.general's ``attributes`` fragment.

Use in a module's DOCUMENTATION::

    extends_documentation_fragment:
      - nodeops.stack.attributes            # check_mode + diff_mode descriptions
      - nodeops.stack.attributes.platform   # platform description
    attributes:
      check_mode:
        support: full
      diff_mode:
        support: none
      platform:
        platforms: posix

or, for a read-only module, ``nodeops.stack.attributes.info_module`` (check_mode
full, diff_mode none) together with ``nodeops.stack.attributes.platform``.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type  # pylint: disable=invalid-name


class ModuleDocFragment(object):

    # Descriptions of the check_mode and diff_mode attributes; the module sets ``support``.
    DOCUMENTATION = r'''
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(diff_mode)), when in diff mode.
'''

    # Description of the platform attribute; the module sets ``platforms``.
    PLATFORM = r'''
options: {}
attributes:
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
'''

    # A module that only reads state: full check mode support, no diff.
    INFO_MODULE = r'''
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state, so it runs (and does its work) in check mode as well.
  diff_mode:
    support: none
    details:
      - This action does not modify state, so there is nothing to diff.
'''
