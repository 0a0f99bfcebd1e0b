"""Who is active: one instance of a group acts, the others stand by (``leader``; the broker lock in
``broker.leader_lock``, tooz backends in ``tooz_lock``)."""

# The tooz backends whose locks expire when their holder goes silent (``[coordination] backend_url``);
# ``settings`` refuses the others, ``tooz_lock`` knows how each one's expiry is set.
TOOZ_SCHEMES = ("redis", "etcd3+http", "etcd3+https", "memcached", "zookeeper", "kazoo")
