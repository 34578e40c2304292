n=$(printf 'c%.0s' $(seq 1 180)); mkdir -p "dir-$n/$n" && echo x > "dir-$n/$n/file-$n"
