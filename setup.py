import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = re.search(r'__version__ = "([^"]+)"', (here / "sqsmaster" / "__init__.py").read_text()).group(1)

setup(
    name="sqsmaster",
    version=version,
    description="Supervise long-running, CPU-heavy, uncooperative tasks fed through Amazon SQS",
    long_description=(here / "README.rst").read_text(),
    long_description_content_type="text/x-rst",
    license="MIT",
    packages=find_packages(exclude=["tests", "tests.*", "bench"]),
    package_data={"sqsmaster.ops.dashboard": ["static/*"]},
    python_requires=">=3.9",
    install_requires=["boto3>=1.28", "botocore>=1.31"],
    extras_require={
        # make demo: --sqs needs moto's server; the progress bar and the timeline picture the README shows.
        "demo": ["moto[server]>=5.0", "tqdm>=4.60", "matplotlib>=3.5"],
        "progress": ["tqdm>=4.60"],
        "plot": ["matplotlib>=3.5"],
        # sqsmaster worker --metrics: the Prometheus endpoint (multiprocess mode).
        "metrics": ["prometheus_client>=0.17"],
        "cron": ["croniter>=2.0"],
        # sqsmaster dashboard: a small WSGI app served by a threaded pure-Python server (no build step).
        "dashboard": ["flask>=2.2", "waitress>=2.1"],
    },
    entry_points={"console_scripts": ["sqsmaster=sqsmaster.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Operating System :: POSIX",
        "Topic :: System :: Distributed Computing",
    ],
)
