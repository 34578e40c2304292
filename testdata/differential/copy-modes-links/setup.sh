mkdir -p tree/deep/deeper && echo x > tree/deep/deeper/x && chmod 600 tree/deep/deeper/x
echo exec > tree/run.sh && chmod 755 tree/run.sh
ln -s deep/deeper/x tree/rel-link && ln -s /etc/passwd tree/abs-link && ln -s missing tree/dangling
echo h > tree/h1 && ln tree/h1 tree/h2
chmod 750 tree/deep && mkdir tree/emptydir && chmod 700 tree/emptydir
