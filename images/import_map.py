"""Which PyPI distribution provides an import name: ``yaml`` is PyYAML, ``cv2`` is opencv-python-headless.

Repair reads ``No module named 'x'`` from a log and has to install something. Most distributions are
named like their top-level module (``requests``, ``numpy``), and PyPI compares names case-insensitively
with ``-``, ``_`` and ``.`` treated alike, so the module name is the right guess for them. The map below
holds the well-known exceptions.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping

#: Import name (top-level, or dotted for namespace packages) -> the distribution to install. Where a
#: project publishes several distributions of one module, the one that installs without system libraries
#: or a display is chosen (opencv-python-headless, psycopg2-binary), because images run tests headless.
DISTRIBUTIONS: Mapping[str, str] = {
    # Packaging, testing and the standard toolchain.
    "pkg_resources": "setuptools",
    "_pytest": "pytest",
    "xdist": "pytest-xdist",
    "pyximport": "Cython",
    "_cffi_backend": "cffi",
    "sipbuild": "sip",
    "skbuild": "scikit-build",
    "mesonpy": "meson-python",
    "poetry.core": "poetry-core",
    "pdm.backend": "pdm-backend",
    "attr": "attrs",
    "typing_extensions": "typing-extensions",
    "tomli_w": "tomli-w",
    "yaml": "PyYAML",
    "yaml_include": "pyyaml-include",
    "ruamel.yaml": "ruamel.yaml",
    "dateutil": "python-dateutil",
    "dotenv": "python-dotenv",
    "decouple": "python-decouple",
    "hydra": "hydra-core",
    "jinja2": "Jinja2",
    "markdown": "Markdown",
    "markdown_it": "markdown-it-py",
    "antlr4": "antlr4-python3-runtime",
    "past": "future",
    "libfuturize": "future",
    "libpasteurize": "future",
    "factory": "factory-boy",
    "vcr": "vcrpy",
    "IPython": "ipython",
    "daemon": "python-daemon",
    "pythonjsonlogger": "python-json-logger",
    "crontab": "python-crontab",
    "slugify": "python-slugify",
    "ulid": "python-ulid",
    "frontmatter": "python-frontmatter",
    "Levenshtein": "python-Levenshtein",
    "absl": "absl-py",
    "gflags": "python-gflags",
    # Scientific Python, data and machine learning.
    "PIL": "Pillow",
    "cv2": "opencv-python-headless",
    "pywt": "PyWavelets",
    "shapefile": "pyshp",
    "llama_cpp": "llama-cpp-python",
    "whisper": "openai-whisper",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "skopt": "scikit-optimize",
    "skbio": "scikit-bio",
    "sksparse": "scikit-sparse",
    "surprise": "scikit-surprise",
    "imblearn": "imbalanced-learn",
    "umap": "umap-learn",
    "faiss": "faiss-cpu",
    "paddle": "paddlepaddle",
    "mpl_toolkits": "matplotlib",
    "mpl_toolkits.basemap": "basemap",
    "pylab": "matplotlib",
    "Bio": "biopython",
    "osgeo": "GDAL",
    "iris": "scitools-iris",
    "fitz": "PyMuPDF",
    "pdfminer": "pdfminer.six",
    "odf": "odfpy",
    "tabula": "tabula-py",
    "camelot": "camelot-py",
    "docx": "python-docx",
    "pptx": "python-pptx",
    "barcode": "python-barcode",
    "snappy": "python-snappy",
    "glm": "PyGLM",
    "OpenGL": "PyOpenGL",
    "weaviate": "weaviate-client",
    # Cryptography, security and authentication.
    "Crypto": "pycryptodome",
    "Cryptodome": "pycryptodomex",
    "OpenSSL": "pyOpenSSL",
    "nacl": "PyNaCl",
    "jwt": "PyJWT",
    "jose": "python-jose",
    "argon2": "argon2-cffi",
    "gnupg": "python-gnupg",
    "ldap": "python-ldap",
    "spnego": "pyspnego",
    "winrm": "pywinrm",
    "solcx": "py-solc-x",
    "bitcoin": "python-bitcoinlib",
    # Web frameworks and their extensions.
    "bs4": "beautifulsoup4",
    "multipart": "python-multipart",
    "rest_framework": "djangorestframework",
    "rest_framework_simplejwt": "djangorestframework-simplejwt",
    "django_filters": "django-filter",
    "corsheaders": "django-cors-headers",
    "debug_toolbar": "django-debug-toolbar",
    "crispy_forms": "django-crispy-forms",
    "environ": "django-environ",
    "storages": "django-storages",
    "allauth": "django-allauth",
    "taggit": "django-taggit",
    "mptt": "django-mptt",
    "polymorphic": "django-polymorphic",
    "model_utils": "django-model-utils",
    "guardian": "django-guardian",
    "oauth2_provider": "django-oauth-toolkit",
    "phonenumber_field": "django-phonenumber-field",
    "import_export": "django-import-export",
    "constance": "django-constance",
    "treebeard": "django-treebeard",
    "reversion": "django-reversion",
    "silk": "django-silk",
    "simple_history": "django-simple-history",
    "widget_tweaks": "django-widget-tweaks",
    "compressor": "django-compressor",
    "haystack": "django-haystack",
    "knox": "django-rest-knox",
    "strawberry": "strawberry-graphql",
    "graphql": "graphql-core",
    "tortoise": "tortoise-orm",
    "socketio": "python-socketio",
    "engineio": "python-engineio",
    "websocket": "websocket-client",
    "telegram": "python-telegram-bot",
    "discord": "discord.py",
    "slack": "slackclient",
    "facebook": "facebook-sdk",
    # Databases, queues and network clients.
    "MySQLdb": "mysqlclient",
    "mysql": "mysql-connector-python",
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg[binary]",
    "bson": "pymongo",
    "gridfs": "pymongo",
    "cassandra": "cassandra-driver",
    "memcache": "python-memcached",
    "kafka": "kafka-python",
    "zmq": "pyzmq",
    "paho": "paho-mqtt",
    "nsq": "pynsq",
    "stomp": "stomp.py",
    "capnp": "pycapnp",
    "snowflake.connector": "snowflake-connector-python",
    "snowflake.sqlalchemy": "snowflake-sqlalchemy",
    "snowflake.snowpark": "snowflake-snowpark-python",
    "databricks.sdk": "databricks-sdk",
    "databricks.sql": "databricks-sql-connector",
    "dns": "dnspython",
    "nmap": "python-nmap",
    "socks": "PySocks",
    "sockshandler": "PySocks",
    "whois": "python-whois",
    "smbclient": "smbprotocol",
    "smb": "pysmb",
    "webdav3": "webdavclient3",
    # Version control, cloud and service SDKs.
    "git": "GitPython",
    "github": "PyGithub",
    "gitlab": "python-gitlab",
    "hglib": "python-hglib",
    "jenkins": "python-jenkins",
    "atlassian": "atlassian-python-api",
    "consul": "python-consul",
    "libvirt": "libvirt-python",
    "vagrant": "python-vagrant",
    "pyVim": "pyvmomi",
    "airflow": "apache-airflow",
    "apache_beam": "apache-beam",
    "libcloud": "apache-libcloud",
    "pyflink": "apache-flink",
    "aws_cdk": "aws-cdk-lib",
    "googleapiclient": "google-api-python-client",
    "apiclient": "google-api-python-client",
    "grpc": "grpcio",
    "grpc_tools": "grpcio-tools",
    "grpc_status": "grpcio-status",
    "grpc_health": "grpcio-health-checking",
    "grpc_reflection": "grpcio-reflection",
    "google.protobuf": "protobuf",
    "google.oauth2": "google-auth",
    "google.rpc": "googleapis-common-protos",
    "google.type": "googleapis-common-protos",
    "google.longrunning": "googleapis-common-protos",
    "google.cloud.exceptions": "google-cloud-core",
    "opentelemetry.trace": "opentelemetry-api",
    "opentelemetry.context": "opentelemetry-api",
    "opentelemetry.metrics": "opentelemetry-api",
    "opentelemetry.propagate": "opentelemetry-api",
    "google.cloud.secretmanager": "google-cloud-secret-manager",
    # Hardware, desktop and media.
    "serial": "pyserial",
    "usb": "pyusb",
    "hid": "hidapi",
    "can": "python-can",
    "bluetooth": "PyBluez",
    "RPi": "RPi.GPIO",
    "board": "adafruit-blinka",
    "digitalio": "adafruit-blinka",
    "busio": "adafruit-blinka",
    "dbus": "dbus-python",
    "gi": "PyGObject",
    "cairo": "pycairo",
    "wx": "wxPython",
    "Xlib": "python-xlib",
    "win32api": "pywin32",
    "win32con": "pywin32",
    "win32com": "pywin32",
    "win32gui": "pywin32",
    "pythoncom": "pywin32",
    "pywintypes": "pywin32",
    "magic": "python-magic",
    "ffmpeg": "ffmpeg-python",
    "vlc": "python-vlc",
    "speech_recognition": "SpeechRecognition",
}

#: Namespace packages whose distributions are named after the namespace plus the next segment, so
#: ``azure.storage.blob`` is azure-storage-blob and ``google.cloud.tasks`` is google-cloud-tasks.
NAMESPACES = frozenset(
    {
        "azure",
        "azure.ai",
        "azure.keyvault",
        "azure.mgmt",
        "azure.storage",
        "backports",
        "flufl",
        "google",
        "google.cloud",
        "jaraco",
        "opentelemetry",
        "opentelemetry.exporter",
        "opentelemetry.instrumentation",
        "sphinxcontrib",
        "zope",
    }
)

#: The API-version suffix of a subpackage (``pubsub_v1``, ``tasks_v2beta3``), which distribution names
#: leave out: ``google.cloud.pubsub_v1`` is google-cloud-pubsub.
_VERSION_SUFFIX = re.compile(r"_v\d+(?:p\d+)?(?:alpha|beta)?\d*$")

#: Modules removed from the standard library (3.12: PEP 632, 3.13: PEP 594) with a PyPI successor. A
#: project's interpreter may be newer than Forager's, so "No module named 'imghdr'" is installable even
#: though Forager's own ``sys.stdlib_module_names`` still lists the module.
REMOVED_FROM_STDLIB: Mapping[str, str] = {
    "distutils": "setuptools",
    "asynchat": "pyasynchat",
    "asyncore": "pyasyncore",
    "imp": "zombie-imp",
    "aifc": "standard-aifc",
    "audioop": "audioop-lts",
    "cgi": "legacy-cgi",
    "cgitb": "legacy-cgi",
    "chunk": "standard-chunk",
    "imghdr": "standard-imghdr",
    "mailcap": "standard-mailcap",
    "nntplib": "standard-nntplib",
    "pipes": "standard-pipes",
    "sndhdr": "standard-sndhdr",
    "sunau": "standard-sunau",
    "telnetlib": "standard-telnetlib",
    "uu": "standard-uu",
    "xdrlib": "standard-xdrlib",
}

#: Standard-library modules newer than Forager's interpreter (3.14), which its
#: ``sys.stdlib_module_names`` does not list yet. No distribution provides them.
NEWER_STDLIB = frozenset({"annotationlib", "compression"})


def distribution_for(module: str) -> str | None:
    """The distribution to install for a missing import name, or None if it is in the standard library.

    ``module`` is an import name as Python reports it, top-level or dotted (``google.cloud.storage``).
    Dotted keys of the map are tried longest prefix first; then a known namespace package gives the
    namespace plus the next segment (``azure.identity`` -> ``azure-identity``); otherwise the guess is
    the top-level name with ``_`` written as ``-`` (``pytest_cov`` -> ``pytest-cov``). API-version
    suffixes of subpackages are ignored (``google.cloud.tasks_v2`` -> ``google-cloud-tasks``).
    """
    top, *rest = module.split(".")
    parts = [top, *(_VERSION_SUFFIX.sub("", part) for part in rest)]
    if top in REMOVED_FROM_STDLIB:
        return REMOVED_FROM_STDLIB[top]
    if top in sys.stdlib_module_names or top in NEWER_STDLIB:
        return None
    for end in range(len(parts), 0, -1):
        known = DISTRIBUTIONS.get(".".join(parts[:end]))
        if known is not None:
            return known
    for end in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:end]) in NAMESPACES:
            return "-".join(parts[: end + 1]).replace("_", "-")
    return top.replace("_", "-")
